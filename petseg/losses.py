"""Segmentation losses on logits: BCE, soft Dice, and their sum."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over all pixels."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, computed per image and averaged, like the per-image Dice metric."""
    probs = torch.sigmoid(logits.float()).flatten(1)
    targets = targets.float().flatten(1)
    intersection = (probs * targets).sum(1)
    denominator = probs.sum(1) + targets.sum(1)
    return (1.0 - (2.0 * intersection + smooth) / (denominator + smooth)).mean()


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice: BCE gives stable pixel gradients, Dice optimises the overlap directly."""
    return bce_loss(logits, targets) + soft_dice_loss(logits, targets)


LOSSES: dict[str, LossFn] = {
    "bce": bce_loss,
    "dice": soft_dice_loss,
    "bce+dice": bce_dice_loss,
}


def get_loss(name: str) -> LossFn:
    """The loss function for ``train.loss``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}") from None
