"""Training: ``train_one_epoch``, ``validate`` and ``fit`` kept apart (as torchvision's references).

Batches are cut straight from the memory-mapped tensor cache (resident on the
GPU when it fits) and augmented on the device, so there is no per-sample
decoding and no data loader between the cache and the model. Every source of
randomness is derived from ``train.seed`` and the epoch number, so a run that
is interrupted and resumed from its last completed epoch ends with exactly the
weights of an uninterrupted run on the same machine and device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import petseg
from petseg.checkpoint import load_checkpoint, save_checkpoint
from petseg.data.augment import AugmentConfig, augment_batch
from petseg.data.cache import Split, fingerprint, load_split
from petseg.device import autocast, configure_device, resolve_device
from petseg.distributed import DistContext, init_distributed, shutdown_distributed
from petseg.errors import CheckpointError, DataError, ParamsError, PetsegError
from petseg.io import remove_stale_temps
from petseg.losses import LossFn, get_loss
from petseg.metrics import dice_per_image
from petseg.models import TRAINING_KEYS, build_model

log = logging.getLogger(__name__)

# schedulers whose shape does not depend on the total number of epochs,
# so that raising train.epochs can continue a finished run
EXTENSIBLE_SCHEDULERS = ("none", "plateau")
ONECYCLE_PCT_START = 0.1  # as in the reference report


@dataclass(frozen=True)
class TrainConfig:
    """The ``train.*`` params, typed."""

    epochs: int
    lr: float
    weight_decay: float = 0.0
    seed: int = 0
    loss: str = "bce+dice"
    optimizer: str = "adamw"
    scheduler: str = "none"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    compile: bool = False
    nproc_per_node: int = 1

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> TrainConfig:
        values = dict(section)
        values["augment"] = AugmentConfig(**values.get("augment", {}))
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# ----------------------------------------------------------------------------- data


class SplitTensors:
    """A cache split served as batches of float images (N x 3 x H x W in [0, 1]) and masks (N x 1 x H x W).

    On CUDA the whole split is uploaded once as uint8 when it fits in a third of
    the free memory; otherwise (and on CPU) each batch is gathered from the
    memory-mapped arrays and copied over (pinned, non-blocking on CUDA).
    """

    def __init__(self, split: Split, device: torch.device, channels_last: bool = True):
        self.split = split
        self.device = device
        self.channels_last = channels_last
        self.images: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        if device.type == "cuda":
            needed = split.images.nbytes + split.masks.nbytes
            free, _ = torch.cuda.mem_get_info(device)
            if needed < free / 3:
                self.images = torch.from_numpy(np.ascontiguousarray(split.images)).to(device)
                self.masks = torch.from_numpy(np.ascontiguousarray(split.masks)).to(device)

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.images is not None and self.masks is not None:
            index = torch.from_numpy(indices).to(self.device, non_blocking=True)
            images, masks = self.images[index], self.masks[index]
        else:
            order = np.sort(indices)  # sequential reads from the memory map
            images = torch.from_numpy(self.split.images[order])
            masks = torch.from_numpy(self.split.masks[order])
            if self.device.type == "cuda":
                images = images.pin_memory().to(self.device, non_blocking=True)
                masks = masks.pin_memory().to(self.device, non_blocking=True)
            elif self.device.type != "cpu":
                images, masks = images.to(self.device), masks.to(self.device)
        # N x H x W x 3 uint8 permuted to N x 3 x H x W is already channels_last in memory
        images = images.permute(0, 3, 1, 2).float().div_(255.0)
        if not self.channels_last:
            images = images.contiguous()
        return images, masks.unsqueeze(1).float()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, context: DistContext = DistContext()) -> list[np.ndarray]:
    """This rank's share of each global batch of one epoch: a seeded shuffle, incomplete last batch dropped.

    With fewer images than one batch, the whole (shuffled) split is one batch.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if n >= batch_size:
        order = order[: (n // batch_size) * batch_size]
        global_batches = order.reshape(-1, batch_size)
    else:
        global_batches = order.reshape(1, -1)
    if not context.enabled:
        return list(global_batches)
    return [batch[context.rank :: context.world_size] for batch in global_batches]


def augment_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The augmentation generator's seed for one epoch on one rank."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


# ------------------------------------------------------------------ optim and sched


def make_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam or AdamW; the fused implementation where this torch has it for the device."""
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if name not in kinds:
        raise ParamsError(f"train.optimizer = {name!r} is invalid; allowed: {', '.join(kinds)}")
    fused = device.type in ("cuda", "cpu")
    try:
        return kinds[name](model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    except (RuntimeError, TypeError):
        return kinds[name](model.parameters(), lr=lr, weight_decay=weight_decay)


def make_scheduler(
    name: str, optimizer: torch.optim.Optimizer, lr: float, epochs: int, steps: int
) -> tuple[Any, bool]:
    """The lr scheduler for ``train.scheduler`` and whether it steps per batch (OneCycle) or per epoch."""
    if name == "none":
        return None, False
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
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=pct_start)
        return scheduler, True
    raise ParamsError(f"train.scheduler = {name!r} is invalid; allowed: none, plateau, cosine, onecycle")


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


# -------------------------------------------------------------------------- epochs


class _EpochSums:
    """Per-image loss and Dice summed on the device (no host sync per batch), reduced over ranks at the end."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.dice = torch.zeros((), dtype=torch.float64, device=device)
        self.seen = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor) -> None:
        n = logits.shape[0]
        self.loss += loss.detach().double() * n
        self.dice += dice_per_image(logits.detach(), masks).sum()
        self.seen += n

    def postfix(self) -> dict[str, str]:
        """Running means for a progress bar (syncs with the device)."""
        return {"loss": f"{self.loss.item() / self.seen:.4f}", "dice": f"{self.dice.item() / self.seen:.4f}"}

    def finish(self, context: DistContext) -> EpochStats:
        seen = torch.tensor(float(self.seen), dtype=torch.float64, device=self.device)
        totals = context.all_reduce_sum(torch.stack([self.loss, self.dice, seen]))
        total_seen = max(1, int(totals[2].item()))
        return EpochStats(
            loss=float(totals[0] / total_seen),
            dice=float(totals[1] / total_seen),
            images=total_seen,
            seconds=time.perf_counter() - self.start,
        )


def train_one_epoch(
    model: nn.Module,
    data: SplitTensors,
    batches: list[np.ndarray],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    *,
    batch_scheduler: Any = None,
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
    context: DistContext = DistContext(),
    progress: tqdm | None = None,
    log_every: int = 10,
) -> EpochStats:
    """One pass over ``batches``; returns the mean loss and per-image train Dice (over all ranks)."""
    model.train()
    sums = _EpochSums(data.device)
    for step, indices in enumerate(batches, 1):
        images, masks = data.batch(indices)
        if augment is not None and augment.active:
            images, masks = augment_batch(images, masks, augment, generator)
        with autocast(data.device):
            logits = model(images)
        loss = loss_fn(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
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
    context: DistContext = DistContext(),
) -> EpochStats:
    """Mean loss and mean per-image Dice (threshold 0.5) on a whole split, in eval mode."""
    model.eval()
    sums = _EpochSums(data.device)
    indices = np.arange(len(data))[context.rank :: context.world_size]
    for begin in range(0, len(indices), batch_size):
        images, masks = data.batch(indices[begin : begin + batch_size])
        with autocast(data.device):
            logits = model(images)
        sums.add(loss_fn(logits, masks), logits, masks)
    return sums.finish(context)


# --------------------------------------------------------------------- run state


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, as plain values and tensors (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_signature(
    model_name: str, model_section: dict[str, Any], config: TrainConfig, image_size: int, data_fingerprint: str
) -> dict[str, Any]:
    """What a checkpoint must share with the current run to be continued (train.epochs aside)."""
    train = config.as_dict()
    train.pop("epochs")
    return {
        "model_name": model_name,
        "model": dict(model_section),
        "train": train,
        "image_size": image_size,
        "data_fingerprint": data_fingerprint,
    }


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    found = []
    for key in keys:
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


@dataclass
class ResumePlan:
    """What to do with an existing last.pt: start fresh, continue, or nothing (already complete)."""

    action: str  # "fresh" | "continue" | "complete"
    reason: str
    checkpoint: dict[str, Any] | None = None


def plan_resume(out_dir: Path, signature: dict[str, Any], epochs: int, scheduler: str) -> ResumePlan:
    """Decide whether ``out_dir/last.pt`` can be continued under the current params and data."""
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if not last_path.exists():
        return ResumePlan("fresh", "no checkpoint yet")
    last = load_checkpoint(last_path)
    if last.get("signature") is None:
        return ResumePlan("fresh", f"{last_path} was not written by petseg's training loop")
    differences = _differences(last["signature"], signature)
    if differences:
        return ResumePlan("fresh", f"{last_path} was made under other params or data ({'; '.join(differences)})")
    done, planned = int(last["epoch"]), int(last["epochs"])
    if planned != epochs:
        if epochs < done:
            return ResumePlan("fresh", f"train.epochs was lowered to {epochs}, below the {done} epochs already done")
        if scheduler not in EXTENSIBLE_SCHEDULERS:
            return ResumePlan(
                "fresh",
                f"train.epochs changed from {planned} to {epochs} and the {scheduler} schedule's shape depends "
                "on the total, so the run cannot be extended",
            )
    if not best_path.exists():
        return ResumePlan("fresh", f"{best_path} is missing, so the best epoch so far is unknown")
    best = load_checkpoint(best_path)
    if best.get("signature") != last["signature"] or int(best["epoch"]) != int(last["best_epoch"]):
        return ResumePlan("fresh", f"{best_path} does not belong to the run in {last_path}")
    if done >= epochs:
        return ResumePlan("complete", f"{last_path} already holds all {epochs} epochs", last)
    verb = "extending" if planned != epochs else "resuming"
    return ResumePlan("continue", f"{verb} from {last_path} after epoch {done} of {epochs}", last)


# ----------------------------------------------------------------------- logging


def _open_live(directory: Path):
    """A DVCLive logger writing to ``directory`` (no report, no dvc.yaml edits, no experiment of its own)."""
    import dvclive.live
    from scmrepo.exceptions import SCMError

    def make() -> dvclive.Live:
        return dvclive.Live(str(directory), resume=False, report=None, save_dvc_exp=False, dvcyaml=False)

    try:
        return make()
    except SCMError:
        # DVCLive reads HEAD when it finds a git repository, which fails before the
        # first commit ("Empty git repo"); log without its git/DVC integration then.
        log.warning("the git repository has no commit yet: DVCLive logs without git integration")
        find_repo = dvclive.live.get_dvc_repo
        dvclive.live.get_dvc_repo = lambda: None
        try:
            return make()
        finally:
            dvclive.live.get_dvc_repo = find_repo


class EpochLog:
    """Per-epoch metrics through DVCLive (one directory per model), rebuilt from the checkpoint history.

    Rewriting the whole log from the history that the checkpoint carries keeps the
    logs and the weights in step, even when a run was killed between the two writes.
    """

    def __init__(self, directory: Path | None, history: list[dict[str, float]]):
        self.live = None
        if directory is None:
            return
        self.live = _open_live(directory)
        for record in history:
            self._write(record, history)

    def _write(self, record: dict[str, float], history: list[dict[str, float]]) -> None:
        live = self.live
        live.step = int(record["epoch"])  # the logs' step column is the epoch number, from 1
        for key in ("train/loss", "train/dice", "val/loss", "val/dice", "lr"):
            live.log_metric(key, record[key])
        best = max(history[: history.index(record) + 1], key=lambda r: r["val/dice"])
        live.log_metric("best/val_dice", best["val/dice"], plot=False)
        live.log_metric("best/epoch", best["epoch"], plot=False)
        live.next_step()

    def append(self, record: dict[str, float], history: list[dict[str, float]]) -> None:
        if self.live is not None:
            self._write(record, history)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


# --------------------------------------------------------------------------- fit


@contextlib.contextmanager
def output_lock(out_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``out_dir`` for this training process, so that two runs never write one model's checkpoints.

    A second run (say, after ``dvc`` itself was killed and its orphaned stage
    is still training) stops with a clear error instead of interleaving its
    epochs with the first one's. The lock (flock on the folder itself, so no
    lock file is left behind) goes with the process, however it ends.
    """
    if not enabled:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PetsegError(
                f"{out_dir}: another training process is writing these checkpoints; let it finish or stop it "
                "(find it with: pgrep -af 'stages/train.py'), then run again"
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass
class FitResult:
    best_dice: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def fit(
    model_name: str,
    model_section: dict[str, Any],
    config: TrainConfig,
    cache_dir: str | Path,
    out_dir: str | Path,
    live_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> FitResult:
    """Train ``model_name`` on the cache's train split, validating each epoch; continue a matching run.

    Writes ``out_dir/best.pt`` (best validation Dice) and ``out_dir/last.pt``
    (last completed epoch) atomically after every epoch, and the per-epoch
    metrics to ``live_dir`` with DVCLive.
    """
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    live_dir = Path(live_dir) if live_dir is not None else None
    device = resolve_device(config.device)
    context = init_distributed(device.type)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    with output_lock(out_dir, enabled=context.is_main):
        result = _fit(model_name, model_section, config, cache_dir, out_dir, live_dir, device, context, progress)
    # after an error the process group ends with the process, once its message is out: the other
    # ranks' "connection closed" errors then come after the cause
    shutdown_distributed(context)
    return result


def _fit(
    model_name: str,
    model_section: dict[str, Any],
    config: TrainConfig,
    cache_dir: Path,
    out_dir: Path,
    live_dir: Path | None,
    device: torch.device,
    context: DistContext,
    progress: bool,
) -> FitResult:
    configure_device(device)
    batch_size = int(model_section["batch_size"])
    if batch_size % context.world_size:
        raise ParamsError(
            f"models.{model_name}.batch_size = {batch_size} must be divisible by the number of processes ({context.world_size})"
        )
    train_split, val_split = load_split(cache_dir, "train"), load_split(cache_dir, "val")
    if len(train_split) == 0 or len(val_split) == 0:
        raise DataError(f"{cache_dir}: the train and val splits must not be empty (train {len(train_split)}, val {len(val_split)})")
    if min(len(train_split), len(val_split)) < context.world_size:
        raise DataError(f"{cache_dir}: every one of the {context.world_size} processes needs train and val images "
                        f"(train {len(train_split)}, val {len(val_split)})")
    image_size = train_split.image_size
    signature = run_signature(model_name, model_section, config, image_size, fingerprint([train_split, val_split]))
    if context.enabled:  # per-rank BatchNorm statistics and augmentation make the process count part of the run
        signature["world_size"] = context.world_size

    plan: ResumePlan | None = None
    if context.is_main:
        remove_stale_temps(out_dir)
        plan = plan_resume(out_dir, signature, config.epochs, config.scheduler)
    # every rank continues rank 0's checkpoint (its out_dir may be the only one, on another node)
    plan = cast(ResumePlan, context.broadcast_object(plan))
    if context.is_main:
        log.info("%s: %s", model_name, plan.reason if plan.action != "fresh" or plan.reason == "no checkpoint yet"
                 else f"starting over: {plan.reason}")

    seed_everything(config.seed)
    arch = {k: v for k, v in model_section.items() if k not in TRAINING_KEYS}
    model = build_model(model_name, **arch)
    channels_last = device.type in ("cuda", "cpu")
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = make_optimizer(config.optimizer, model, config.lr, config.weight_decay, device)
    steps = steps_per_epoch(len(train_split), batch_size)
    scheduler, per_batch = make_scheduler(config.scheduler, optimizer, config.lr, config.epochs, steps)

    history: list[dict[str, float]] = []
    start_epoch, best_dice, best_epoch = 0, -math.inf, 0
    if plan.checkpoint is not None:
        checkpoint = plan.checkpoint
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if scheduler is not None and checkpoint.get("scheduler") is not None:
                scheduler.load_state_dict(checkpoint["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{out_dir / 'last.pt'}: cannot restore the training state: {exc}") from None
        restore_rng_state(checkpoint["rng"])
        history = list(checkpoint["history"])
        start_epoch, best_dice, best_epoch = int(checkpoint["epoch"]), float(checkpoint["best_dice"]), int(checkpoint["best_epoch"])

    epoch_log = EpochLog(live_dir, history) if context.is_main else EpochLog(None, [])
    if plan.action == "complete":
        epoch_log.close()
        return FitResult(best_dice, best_epoch, 0, history)

    train_model: nn.Module = model
    if context.enabled:
        # With more than two processes the order in which gradients are summed depends on DDP's
        # buckets, which DDP regroups after its first step; a resumed run must sum them as the
        # uninterrupted run did, so find_unused_parameters=True keeps the first buckets for good (the
        # cost: one graph traversal per step, and a one-time DDP warning that no parameter was unused).
        # Two processes sum a + b, the same either way.
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=context.world_size > 2,
        )
    if config.compile:
        train_model = torch.compile(train_model)
    loss_fn = get_loss(config.loss)
    train_data = SplitTensors(train_split, device, channels_last)
    val_data = SplitTensors(val_split, device, channels_last)

    epochs_run = 0
    for epoch in range(start_epoch, config.epochs):
        batches = epoch_batches(len(train_split), batch_size, config.seed, epoch, context)
        generator = torch.Generator(device=device).manual_seed(augment_seed(config.seed, epoch, context.rank))
        bar = tqdm(total=len(batches), desc=f"{model_name} epoch {epoch + 1}/{config.epochs}", unit="batch",
                   disable=not (progress and context.is_main), leave=False, dynamic_ncols=True)
        lr = current_lr(optimizer)
        train_stats = train_one_epoch(
            train_model, train_data, batches, optimizer, loss_fn, batch_scheduler=scheduler if per_batch else None,
            augment=config.augment, generator=generator, context=context, progress=bar,
        )
        bar.close()
        context.broadcast_buffers(model)  # validate the model that rank 0 saves
        val_stats = validate(train_model, val_data, batch_size, loss_fn, context=context)
        if scheduler is not None and not per_batch:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_stats.dice)
            else:
                scheduler.step()
        record = {
            "epoch": epoch + 1,
            "train/loss": train_stats.loss,
            "train/dice": train_stats.dice,
            "val/loss": val_stats.loss,
            "val/dice": val_stats.dice,
            "lr": lr,
        }
        history.append(record)
        improved = val_stats.dice > best_dice
        if improved:
            best_dice, best_epoch = val_stats.dice, epoch + 1
        epochs_run += 1
        if context.is_main:
            state = {
                "model_name": model_name,
                "model_params": arch,
                "model": _unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": epoch + 1,
                "epochs": config.epochs,
                "val_dice": val_stats.dice,
                "best_dice": best_dice,
                "best_epoch": best_epoch,
                "history": history,
                "rng": rng_state(),
                "signature": signature,
                "params": {"model": dict(model_section), "train": config.as_dict()},
                "image_size": image_size,
                "petseg_version": petseg.__version__,
            }
            # best.pt lands before last.pt: a kill between the two only repeats this epoch
            save_checkpoint(out_dir / "last.pt", state, also=[out_dir / "best.pt"] if improved else [])
            epoch_log.append(record, history)
            log.info(
                "%s epoch %d/%d  train loss %.4f dice %.4f  val loss %.4f dice %.4f  lr %.2e  %.0f img/s%s",
                model_name, epoch + 1, config.epochs, train_stats.loss, train_stats.dice, val_stats.loss,
                val_stats.dice, lr, train_stats.images_per_s, "  *best*" if improved else "",
            )
        context.barrier()
    epoch_log.close()
    return FitResult(best_dice, best_epoch, epochs_run, history)
