"""Segmentation metrics from per-image pixel counts.

Per-image Dice is 2|P∩G| / (|P| + |G|) with P the pixels whose probability
exceeds the threshold and G the true pet pixels; an image where both are empty
scores 1. IoU is |P∩G| / |P∪G|, also 1 when both are empty. Pooled Dice sums
the counts over all images first.

The counts are int64 and may stay on the device; the exact scores (float64) are
computed from them on the host, in NumPy, because Apple's MPS has no float64.
Only the training log's running Dice (:func:`dice_per_image`) stays on the
device, in float32.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# columns of the counts tensor
TP, FP, FN, TN = range(4)


def pixel_counts(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image [tp, fp, fn, tn] (int64, N x 4) from boolean-like N x ... masks."""
    predicted = predicted.bool().flatten(1)
    target = target.bool().flatten(1)
    tp = (predicted & target).sum(1)
    fp = (predicted & ~target).sum(1)
    fn = (~predicted & target).sum(1)
    tn = predicted.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=1)


def host_counts(counts: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pixel counts as float64 on the host (exact: counts stay far below 2**53)."""
    if isinstance(counts, torch.Tensor):
        counts = counts.cpu().numpy()
    return np.asarray(counts, dtype=np.float64)


def ratio_or_one(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator in float64, 1 where the denominator is 0 (both masks empty)."""
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 1.0)


def dice_from_counts(counts: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-row Dice (float64, on the host); 1 where prediction and truth are both empty."""
    counts = host_counts(counts)
    numerator = 2 * counts[..., TP]
    return ratio_or_one(numerator, numerator + counts[..., FP] + counts[..., FN])


def iou_from_counts(counts: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-row IoU (float64, on the host); 1 where prediction and truth are both empty."""
    counts = host_counts(counts)
    return ratio_or_one(counts[..., TP], counts[..., TP] + counts[..., FP] + counts[..., FN])


def dice_per_image(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image Dice of thresholded sigmoid(logits) against a 0/1 target: float32, on the logits' device.

    For the training log (no host sync per batch); evaluation's exact scores use :func:`dice_from_counts`.
    """
    counts = pixel_counts(probability_mask(logits, threshold), target).float()
    numerator = 2 * counts[:, TP]
    denominator = numerator + counts[:, FP] + counts[:, FN]
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.ones_like(denominator))


def probability_mask(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """sigmoid(logits) > threshold, in float32 exactly as the definition reads."""
    return torch.sigmoid(logits.float()) > threshold


def boundary_distance(height: int, width: int, ratio: float = 0.02) -> int:
    """Boundary IoU's band width d: max(1, round(ratio x image diagonal)), as Cheng et al.'s reference code."""
    return max(1, int(round(ratio * (height**2 + width**2) ** 0.5)))


def boundary_band(masks: torch.Tensor, distance: int) -> torch.Tensor:
    """The inner boundary band of boolean N x H x W masks: each mask minus its erosion by a 3 x 3 square
    applied ``distance`` times, the outside of the image counting as background.

    ``distance`` erosions by a 3 x 3 square are one erosion by a (2d+1) x (2d+1) square: a max-pool of
    the complement, padded with background (1 in the complement).
    """
    complement = F.pad((~masks.bool()).float()[:, None], (distance,) * 4, value=1.0)
    eroded = F.max_pool2d(complement, kernel_size=2 * distance + 1, stride=1)[:, 0] < 0.5
    return masks.bool() & ~eroded


def boundary_iou(predicted: torch.Tensor, target: torch.Tensor, ratio: float = 0.02) -> np.ndarray:
    """Per-image Boundary IoU (Cheng et al., CVPR 2021) of boolean N x H x W masks.

    The bands are counted on the masks' device; the ratio is float64 on the host, 1 when both bands are empty.
    """
    distance = boundary_distance(*predicted.shape[-2:], ratio=ratio)
    bands = boundary_band(predicted, distance).flatten(1), boundary_band(target, distance).flatten(1)
    counts = host_counts(torch.stack([(bands[0] & bands[1]).sum(1), (bands[0] | bands[1]).sum(1)], dim=1))
    return ratio_or_one(counts[:, 0], counts[:, 1])


def dice_ignoring(predicted: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor) -> np.ndarray:
    """Per-image Dice with the ``ignore`` pixels (e.g. the trimap's boundary band) removed from both masks."""
    keep = ~ignore.bool()
    return dice_from_counts(pixel_counts(predicted.bool() & keep, target.bool() & keep))
