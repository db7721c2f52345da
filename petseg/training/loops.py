"""One training epoch and one validation pass (kept apart, as in torchvision's references).

Loss and per-image Dice are summed on the device in float32 (no host sync per
batch; Apple's MPS has no float64) and reduced over the processes at the end of
the pass.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from petseg.data.augment import augment_batch, is_active
from petseg.distributed import DistContext
from petseg.losses import LossFn
from petseg.metrics import dice_per_image
from petseg.params import AugmentParams
from petseg.precision import Precision
from petseg.training.batches import SplitTensors
from petseg.training.ema import WeightAverage


@dataclass
class EpochStats:
    """Mean loss and mean per-image Dice over an epoch, with its throughput."""

    loss: float
    dice: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


class EpochSums:
    """Per-image loss and Dice summed on the device in float32 (no host sync per batch), reduced over ranks at the end.

    float32, not float64: MPS has none. An epoch's sums stay well within the log's four decimals.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.loss = torch.zeros((), dtype=torch.float32, device=device)
        self.dice = torch.zeros((), dtype=torch.float32, device=device)
        self.seen = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor) -> None:
        n = logits.shape[0]
        self.loss += loss.detach().float() * n
        self.dice += dice_per_image(logits.detach(), masks).sum()
        self.seen += n

    def postfix(self) -> dict[str, str]:
        """Running means for a progress bar (syncs with the device)."""
        return {"loss": f"{self.loss.item() / self.seen:.4f}", "dice": f"{self.dice.item() / self.seen:.4f}"}

    def finish(self, context: DistContext) -> EpochStats:
        seen = torch.tensor(float(self.seen), dtype=torch.float32, device=self.device)  # exact up to 2**24
        loss, dice, total = context.all_reduce_sum(torch.stack([self.loss, self.dice, seen])).tolist()
        total_seen = max(1, int(total))
        return EpochStats(
            loss=loss / total_seen,
            dice=dice / total_seen,
            images=total_seen,
            seconds=time.perf_counter() - self.start,
        )


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    images: torch.Tensor,
    masks: torch.Tensor,
    precision: Precision | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (in the run's precision), loss in fp32, backward and optimizer step; returns (loss, logits)."""
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        logits = model(images)
    loss = loss_fn(logits, masks)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:  # fp16: scale the loss so small gradients survive, unscale before the step, skip steps that overflowed
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss, logits


def train_one_epoch(
    model: nn.Module,
    data: SplitTensors,
    batches: list[np.ndarray],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    *,
    precision: Precision | None = None,
    scaler: torch.amp.GradScaler | None = None,
    batch_scheduler: Any = None,
    augment: AugmentParams | None = None,
    generator: torch.Generator | None = None,
    context: DistContext = DistContext(),
    progress: tqdm | None = None,
    log_every: int = 10,
    average: WeightAverage | None = None,
) -> EpochStats:
    """One pass over ``batches``; returns the mean loss and per-image train Dice (over all ranks).

    ``average``: the weights' moving average, updated after every optimizer step.
    """
    model.train()
    sums = EpochSums(data.device)
    for step, indices in enumerate(batches, 1):
        images, masks = data.batch(indices)
        if augment is not None and is_active(augment):
            images, masks = augment_batch(images, masks, augment, generator)
        loss, logits = training_step(model, optimizer, loss_fn, images, masks, precision, scaler)
        if batch_scheduler is not None:
            batch_scheduler.step()
        if average is not None:
            average.update()
        with torch.no_grad():
            sums.add(loss, logits, masks)
        if progress is not None:
            progress.update(1)
            if step % log_every == 0 or step == len(batches):
                progress.set_postfix(sums.postfix())
    return sums.finish(context)


@torch.inference_mode()
def validate(
    model: nn.Module,
    data: SplitTensors,
    batch_size: int,
    loss_fn: LossFn,
    *,
    precision: Precision | None = None,
    context: DistContext = DistContext(),
) -> EpochStats:
    """Mean loss and mean per-image Dice (threshold 0.5) on a whole split, in eval mode, in the run's precision."""
    model.eval()
    sums = EpochSums(data.device)
    indices = np.arange(len(data))[context.rank :: context.world_size]
    for begin in range(0, len(indices), batch_size):
        images, masks = data.batch(indices[begin : begin + batch_size])
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            logits = model(images)
        sums.add(loss_fn(logits, masks), logits, masks)
    return sums.finish(context)
