"""Batched data augmentation on the training device: flips, small rotations, scale jitter and colour jitter.

Whole batches are transformed at once with per-image random draws from one
``torch.Generator``, so augmentation costs a few elementwise kernels per batch
instead of per-sample Python, and is reproducible from the seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from petseg.params import AugmentParams

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale
_GRAY = (0.299, 0.587, 0.114)


def is_active(config: AugmentParams) -> bool:
    """Whether ``config`` changes anything at all."""
    return any(
        (config.hflip, config.vflip, config.rotate, config.scale, config.brightness, config.contrast, config.saturation)
    )


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _factors(n: int, strength: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return (1.0 - strength + 2.0 * strength * u).view(n, 1, 1, 1)


def _flip(x: torch.Tensor, chosen: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.where(chosen.view(-1, 1, 1, 1), x.flip(dim), x)


def _rotate_and_scale(
    images: torch.Tensor, masks: torch.Tensor, config: AugmentParams, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each image by an angle in [-rotate, rotate] degrees and zoom it by a factor in [1-scale, 1+scale].

    One affine map per image, about its centre, applied to image (bilinear) and mask (nearest) alike;
    what comes into view from outside the frame is the frame mirrored (reflection), so image and mask
    stay consistent.
    """
    n = images.shape[0]
    u = torch.rand(2, n, generator=generator, device=images.device, dtype=images.dtype) * 2 - 1
    angle = u[0] * (config.rotate * math.pi / 180.0)
    zoom = 1.0 + u[1] * config.scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input coordinates: the inverse map
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    masks = F.grid_sample(masks, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return images.clamp_(0.0, 1.0), masks


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: AugmentParams,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment float images N x 3 x H x W in [0, 1] and their masks N x 1 x H x W together.

    Flips, rotations and zooms move image and mask alike; colour jitter touches the image only.
    Each transform draws from ``generator`` only when it is on, so turning one on never changes
    the draws of those before it.
    """
    n = images.shape[0]
    if config.hflip > 0:
        chosen = torch.rand(n, generator=generator, device=images.device) < config.hflip
        images, masks = _flip(images, chosen, -1), _flip(masks, chosen, -1)
    if config.vflip > 0:
        chosen = torch.rand(n, generator=generator, device=images.device) < config.vflip
        images, masks = _flip(images, chosen, -2), _flip(masks, chosen, -2)
    if config.rotate > 0 or config.scale > 0:
        images, masks = _rotate_and_scale(images, masks, config, generator)
    if config.brightness > 0:
        images = (images * _factors(n, config.brightness, images, generator)).clamp_(0.0, 1.0)
    if config.contrast > 0:
        mean = _grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
        images = torch.lerp(mean, images, _factors(n, config.contrast, images, generator)).clamp_(0.0, 1.0)
    if config.saturation > 0:
        gray = _grayscale(images)
        images = torch.lerp(gray, images, _factors(n, config.saturation, images, generator)).clamp_(0.0, 1.0)
    return images, masks
