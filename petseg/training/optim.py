"""The optimizer and lr schedule of ``train.optimizer`` and ``train.scheduler``."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# schedulers whose shape does not depend on the total number of epochs,
# so that raising train.epochs can continue a finished run
EXTENSIBLE_SCHEDULERS = ("none", "plateau")
ONECYCLE_PCT_START = 0.1  # as in the reference report
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def make_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """Adam or AdamW; the fused implementation where this torch has it for the device."""
    fused = device.type in ("cuda", "cpu")
    try:
        return OPTIMIZERS[name](model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    except (RuntimeError, TypeError):
        return OPTIMIZERS[name](model.parameters(), lr=lr, weight_decay=weight_decay)


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, lr: float, epochs: int, steps: int) -> tuple[Any, bool]:
    """The lr scheduler for ``train.scheduler`` and whether it steps per batch (OneCycle) or per epoch."""
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3), False
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr * 0.01), False
    if name == "onecycle":
        total = epochs * steps
        if total < 3:
            log.warning("onecycle needs at least 3 steps in all (have %d); training at a constant lr", total)
            return None, False
        # a tiny run needs a warm-up of at least two steps for the schedule to exist
        pct_start = max(ONECYCLE_PCT_START, 2.0 / total)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=pct_start), True
    return None, False  # none


def step_epoch_scheduler(scheduler: Any, val_dice: float) -> None:
    """Advance a per-epoch scheduler (plateau watches validation Dice)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_dice)
    else:
        scheduler.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
