"""``fit``: train one model on the cache's train split, validating each epoch; continue a matching run.

Reads top to bottom like torchvision's ``references/segmentation/train.py``:
device and processes, data, resume plan, model, optimizer and schedule,
restored state, then the epochs, each ending with a checkpoint and a log row.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import petseg
from petseg.checkpoint import Checkpoint, save_checkpoint
from petseg.data.cache import fingerprint
from petseg.device import configure_device, resolve_compile, resolve_device
from petseg.distributed import DistContext, init_distributed, shutdown_distributed
from petseg.errors import CheckpointError
from petseg.losses import get_loss
from petseg.memory import out_of_memory_explained
from petseg.models import architecture, build_model
from petseg.params import TrainParams, as_dict
from petseg.precision import resolve_precision
from petseg.training.batches import SplitTensors, augment_seed, epoch_batches, steps_per_epoch
from petseg.training.ema import WeightAverage
from petseg.training.log import EpochLog, epoch_record
from petseg.training.loops import train_one_epoch, validate
from petseg.training.optim import current_lr, make_optimizer, make_scheduler, step_epoch_scheduler
from petseg.training.resume import (
    output_lock,
    restore_rng_state,
    rng_state,
    run_signature,
    seed_everything,
)
from petseg.training.setup import load_splits, parallel_model, plan_run

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    best_dice: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]


@dataclass
class _RunState:
    """Where the run stands: the epochs done, their records and the best so far."""

    epoch: int = 0
    best_dice: float = -math.inf
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)  # timing, kept apart from the (exact) history


def fit(
    model_name: str,
    model_params: Any,
    config: TrainParams,
    cache_dir: str | Path,
    out_dir: str | Path,
    live_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> FitResult:
    """Train ``model_name`` (its ``models.<name>`` params section) and write its checkpoints and logs.

    Writes ``out_dir/best.pt`` (best validation Dice) and ``out_dir/last.pt``
    (last completed epoch) atomically after every epoch, and the per-epoch
    metrics to ``live_dir`` with DVCLive.
    """
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    device = resolve_device(config.device)
    context = init_distributed(device.type)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    with output_lock(out_dir, enabled=context.is_main):
        result = _fit(
            model_name,
            model_params,
            config,
            cache_dir,
            out_dir,
            Path(live_dir) if live_dir is not None else None,
            device,
            context,
            progress,
        )
    # after an error the process group ends with the process, once its message is out: the other
    # ranks' "connection closed" errors then come after the cause
    shutdown_distributed(context)
    return result


def _restore(
    checkpoint: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    out_dir: Path,
    average: WeightAverage | None,
) -> _RunState:
    try:
        if average is not None:  # the file's model is the average; the trained weights travel beside it
            average.restore(checkpoint.model, checkpoint.ema, out_dir / "last.pt")
        else:
            model.load_state_dict(checkpoint.model)
        optimizer.load_state_dict(checkpoint.optimizer)
        if scheduler is not None and checkpoint.scheduler is not None:
            scheduler.load_state_dict(checkpoint.scheduler)
        if scaler is not None and checkpoint.scaler is not None:
            scaler.load_state_dict(checkpoint.scaler)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{out_dir / 'last.pt'}: cannot restore the training state: {exc}") from None
    restore_rng_state(checkpoint.rng)
    return _RunState(
        checkpoint.epoch,
        checkpoint.best_dice,
        checkpoint.best_epoch,
        list(checkpoint.history),
        list(checkpoint.epoch_seconds),
    )


def _fit(
    model_name: str,
    model_params: Any,
    config: TrainParams,
    cache_dir: Path,
    out_dir: Path,
    live_dir: Path | None,
    device: torch.device,
    context: DistContext,
    progress: bool,
) -> FitResult:
    configure_device(device)
    batch_size = context.global_batch(model_params.batch_size, f"models.{model_name}.batch_size")
    train_split, val_split = load_splits(cache_dir, context, model_name, batch_size)
    image_size = train_split.image_size
    precision = resolve_precision(config.precision, device)
    compiled, compile_reason = resolve_compile(config.compile, device, precision.name)
    signature = run_signature(model_name, model_params, config, image_size, fingerprint([train_split, val_split]))
    signature["precision"] = precision.name  # what auto resolved to on this machine: part of the run
    if context.enabled:  # per-rank BatchNorm statistics and augmentation make the process count part of the run
        signature["world_size"] = context.world_size
    plan = plan_run(out_dir, signature, config, context, model_name)
    if context.is_main:
        log.info(
            "%s: training in %s (%s); %s (%s)",
            model_name,
            precision.name,
            precision.reason,
            "compiled" if compiled else "not compiled",
            compile_reason,
        )

    seed_everything(config.seed)
    arch = architecture(as_dict(model_params))
    model = build_model(model_name, **arch)
    channels_last = device.type in ("cuda", "cpu")
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = make_optimizer(config.optimizer, model, config.lr, config.weight_decay, device)
    scheduler, per_batch = make_scheduler(
        config.scheduler, optimizer, config.lr, config.epochs, steps_per_epoch(len(train_split), batch_size)
    )
    scaler = precision.grad_scaler()
    average = WeightAverage(model, config.ema) if config.ema > 0 else None
    state = _RunState()
    if plan.checkpoint is not None:
        state = _restore(plan.checkpoint, model, optimizer, scheduler, scaler, out_dir, average)
    epoch_log = EpochLog(live_dir if context.is_main else None, state.history)
    if plan.action == "complete":
        epoch_log.close()
        return FitResult(state.best_dice, state.best_epoch, 0, state.history)

    train_model = parallel_model(model, device, context, compiled)
    loss_fn = get_loss(config.loss)
    train_data, val_data = (
        SplitTensors(train_split, device, channels_last),
        SplitTensors(val_split, device, channels_last),
    )
    oom = out_of_memory_explained(device, model_name, batch_size, image_size, f"models.{model_name}.batch_size")
    epochs_run = 0
    for epoch in range(state.epoch + 1, config.epochs + 1):  # numbered from 1
        batches = epoch_batches(len(train_split), batch_size, config.seed, epoch - 1, context)
        generator = torch.Generator(device=device).manual_seed(augment_seed(config.seed, epoch - 1, context.rank))
        bar = tqdm(
            total=len(batches),
            desc=f"{model_name} epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not (progress and context.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        lr, started = current_lr(optimizer), time.perf_counter()
        train_stats = oom(train_one_epoch)(
            train_model,
            train_data,
            batches,
            optimizer,
            loss_fn,
            precision=precision,
            scaler=scaler,
            batch_scheduler=scheduler if per_batch else None,
            augment=config.augment,
            generator=generator,
            context=context,
            progress=bar,
            average=average,
        )
        bar.close()
        context.broadcast_buffers(model)  # validate the model that rank 0 saves
        validated = train_model
        if average is not None:
            context.broadcast_buffers(average.module)
            validated = average.module
        val_stats = oom(validate)(validated, val_data, batch_size, loss_fn, precision=precision, context=context)
        if scheduler is not None and not per_batch:
            step_epoch_scheduler(scheduler, val_stats.dice)
        record = epoch_record(epoch, train_stats.loss, train_stats.dice, val_stats.loss, val_stats.dice, lr)
        state.history.append(record)
        state.epoch_seconds.append(time.perf_counter() - started)
        improved = val_stats.dice > state.best_dice
        if improved:
            state.best_dice, state.best_epoch = val_stats.dice, epoch
        state.epoch = epoch
        epochs_run += 1
        if context.is_main:
            checkpoint = Checkpoint(
                model_name=model_name,
                model_params=arch,
                model=(average.module if average is not None else model).state_dict(),
                image_size=image_size,
                epoch=epoch,
                val_dice=val_stats.dice,
                epochs=config.epochs,
                best_dice=state.best_dice,
                best_epoch=state.best_epoch,
                history=state.history,
                epoch_seconds=state.epoch_seconds,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                scaler=scaler.state_dict() if scaler is not None else None,
                rng=rng_state(),
                ema=average.state() if average is not None else None,
                signature=signature,
                petseg_version=petseg.__version__,
            )
            # best.pt lands before last.pt: a kill between the two only repeats this epoch
            save_checkpoint(out_dir / "last.pt", checkpoint, also=[out_dir / "best.pt"] if improved else [])
            epoch_log.append(record, state.history)
            log.info(
                "%s epoch %d/%d  train loss %.4f dice %.4f  val loss %.4f dice %.4f  lr %.2e  %.0f img/s%s",
                model_name,
                epoch,
                config.epochs,
                train_stats.loss,
                train_stats.dice,
                val_stats.loss,
                val_stats.dice,
                lr,
                train_stats.images_per_s,
                "  *best*" if improved else "",
            )
        context.barrier()
    epoch_log.close()
    return FitResult(state.best_dice, state.best_epoch, epochs_run, state.history)
