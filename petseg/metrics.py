"""Segmentation metrics from per-image pixel counts.

Per-image Dice is 2|P∩G| / (|P| + |G|) with P the pixels whose probability
exceeds the threshold and G the true pet pixels; an image where both are empty
scores 1. IoU is |P∩G| / |P∪G|, also 1 when both are empty. Pooled Dice sums
the counts over all images first.
"""

from __future__ import annotations

import torch

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


def dice_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Per-row Dice (float64); 1 where prediction and truth are both empty."""
    counts = counts.double()
    numerator = 2 * counts[..., TP]
    denominator = numerator + counts[..., FP] + counts[..., FN]
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.ones_like(denominator))


def iou_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Per-row IoU (float64); 1 where prediction and truth are both empty."""
    counts = counts.double()
    union = counts[..., TP] + counts[..., FP] + counts[..., FN]
    return torch.where(union > 0, counts[..., TP] / union.clamp(min=1), torch.ones_like(union))


def dice_per_image(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image Dice of thresholded sigmoid(logits) against a 0/1 target."""
    return dice_from_counts(pixel_counts(probability_mask(logits, threshold), target))


def probability_mask(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """sigmoid(logits) > threshold, in float32 exactly as the definition reads."""
    return torch.sigmoid(logits.float()) > threshold
