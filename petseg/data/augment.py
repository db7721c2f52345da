"""Batched data augmentation on the training device: flips and colour jitter.

Whole batches are transformed at once with per-image random draws from one
``torch.Generator``, so augmentation costs a few elementwise kernels per batch
instead of per-sample Python, and is reproducible from the seed.
"""

from __future__ import annotations

import torch

from petseg.params import AugmentParams

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale
_GRAY = (0.299, 0.587, 0.114)


def is_active(config: AugmentParams) -> bool:
    """Whether ``config`` changes anything at all."""
    return any((config.hflip, config.vflip, config.brightness, config.contrast, config.saturation))


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _factors(n: int, strength: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return (1.0 - strength + 2.0 * strength * u).view(n, 1, 1, 1)


def _flip(x: torch.Tensor, chosen: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.where(chosen.view(-1, 1, 1, 1), x.flip(dim), x)


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: AugmentParams,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment float images N x 3 x H x W in [0, 1] and their masks N x 1 x H x W together.

    Flips move image and mask alike; colour jitter touches the image only.
    """
    n = images.shape[0]
    if config.hflip > 0:
        chosen = torch.rand(n, generator=generator, device=images.device) < config.hflip
        images, masks = _flip(images, chosen, -1), _flip(masks, chosen, -1)
    if config.vflip > 0:
        chosen = torch.rand(n, generator=generator, device=images.device) < config.vflip
        images, masks = _flip(images, chosen, -2), _flip(masks, chosen, -2)
    if config.brightness > 0:
        images = (images * _factors(n, config.brightness, images, generator)).clamp_(0.0, 1.0)
    if config.contrast > 0:
        mean = _grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
        images = torch.lerp(mean, images, _factors(n, config.contrast, images, generator)).clamp_(0.0, 1.0)
    if config.saturation > 0:
        gray = _grayscale(images)
        images = torch.lerp(gray, images, _factors(n, config.saturation, images, generator)).clamp_(0.0, 1.0)
    return images, masks
