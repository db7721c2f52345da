"""Setting a training run up: its data splits, whether it continues, and the model as the steps call it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from petseg.data.cache import Split, load_split
from petseg.distributed import DistContext
from petseg.errors import DataError
from petseg.io import remove_stale_temps
from petseg.params import TrainParams
from petseg.training.resume import ResumePlan, plan_resume

log = logging.getLogger("petseg.training.run")


def load_splits(cache_dir: Path, context: DistContext, model_name: str, batch_size: int) -> tuple[Split, Split]:
    """The train and validation splits; one that cannot make a batch, or give every process an image, is refused."""
    train_split, val_split = load_split(cache_dir, "train"), load_split(cache_dir, "val")
    if len(train_split) < batch_size:
        raise DataError(
            f"{train_split.directory}: the train split holds {len(train_split)} images, fewer than one batch of "
            f"models.{model_name}.batch_size = {batch_size}; lower the batch size or use more training data"
        )
    if len(val_split) < max(1, context.world_size):
        raise DataError(
            f"{val_split.directory}: {len(val_split)} val images, fewer than the {context.world_size} processes"
        )
    return train_split, val_split


def plan_run(
    out_dir: Path, signature: dict[str, Any], config: TrainParams, context: DistContext, model_name: str
) -> ResumePlan:
    """Rank 0 decides whether to continue last.pt; every rank continues rank 0's checkpoint."""
    plan: ResumePlan | None = None
    if context.is_main:
        remove_stale_temps(out_dir)
        plan = plan_resume(out_dir, signature, config.epochs, config.scheduler)
        fresh_start = plan.action == "fresh" and plan.reason != "no checkpoint yet"
        log.info("%s: %s", model_name, f"starting over: {plan.reason}" if fresh_start else plan.reason)
    return cast(ResumePlan, context.broadcast_object(plan))


def parallel_model(model: nn.Module, device: torch.device, context: DistContext, compile_model: bool) -> nn.Module:
    """The model as the training steps call it: DDP across processes, compiled when asked."""
    if context.enabled:
        # With more than two processes the order in which gradients are summed depends on DDP's
        # buckets, which DDP regroups after its first step; a resumed run must sum them as the
        # uninterrupted run did, so find_unused_parameters=True keeps the first buckets for good (the
        # cost: one graph traversal per step, and a one-time DDP warning that no parameter was unused).
        # Two processes sum a + b, the same either way.
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=context.world_size > 2,
        )
    return torch.compile(model) if compile_model else model
