"""Continuing a run: what a checkpoint must share with the current one, RNG state, and the folder lock.

Every random draw derives from ``train.seed`` and the epoch number, and the
RNG states travel in the checkpoint, so a run interrupted after epoch k and
continued ends with exactly the weights of an uninterrupted run on the same
machine and device. A checkpoint is only continued under the params it was
made with and the same cached data; anything else starts over, saying why.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petseg.checkpoint import Checkpoint, load_checkpoint
from petseg.errors import PetsegError
from petseg.params import TrainParams, as_dict
from petseg.training.optim import EXTENSIBLE_SCHEDULERS


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, as plain values and tensors (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_signature(
    model_name: str, model_section: Any, config: TrainParams, image_size: int, data_fingerprint: str
) -> dict[str, Any]:
    """What a checkpoint must share with the current run to be continued (train.epochs aside)."""
    train = as_dict(config)
    train.pop("epochs")
    return {
        "model_name": model_name,
        "model": as_dict(model_section),
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
    checkpoint: Checkpoint | None = None


def plan_resume(out_dir: Path, signature: dict[str, Any], epochs: int, scheduler: str) -> ResumePlan:
    """Decide whether ``out_dir/last.pt`` can be continued under the current params and data."""
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if not last_path.exists():
        return ResumePlan("fresh", "no checkpoint yet")
    last = load_checkpoint(last_path)
    if last.signature is None:
        return ResumePlan("fresh", f"{last_path} was not written by petseg's training loop")
    differences = _differences(last.signature, signature)
    if differences:
        return ResumePlan("fresh", f"{last_path} was made under other params or data ({'; '.join(differences)})")
    done, planned = last.epoch, last.epochs
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
    if best.signature != last.signature or best.epoch != last.best_epoch:
        return ResumePlan("fresh", f"{best_path} does not belong to the run in {last_path}")
    if done >= epochs:
        return ResumePlan("complete", f"{last_path} already holds all {epochs} epochs", last)
    verb = "extending" if planned != epochs else "resuming"
    return ResumePlan("continue", f"{verb} from {last_path} after epoch {done} of {epochs}", last)


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
                "(find it with: pgrep -af 'stages[./]train'), then run again"
            ) from None
        yield
    finally:
        os.close(fd)
