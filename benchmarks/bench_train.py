"""Training-loop efficiency: our epoch against the model's own forward + backward + step on ready tensors.

    python benchmarks/bench_train.py [--size 64] [--models unet resnet34_unet]

Both are measured in the same run, interleaved, on the same device, with the
same model, batch size, memory format, loss and optimizer; the ratio of their
images/s (median of the rounds) is what the loop costs: 1.0 means the loop
adds nothing to the model's own compute.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_preprocess import WORK_DIR, build_raw

from petseg.data.cache import load_split
from petseg.data.preprocess import preprocess
from petseg.device import configure_device, resolve_device, synchronize
from petseg.losses import get_loss
from petseg.models import build_model
from petseg.params import AugmentParams
from petseg.training.batches import SplitTensors, epoch_batches
from petseg.training.loops import train_one_epoch, training_step
from petseg.training.optim import make_optimizer

DEFAULT_MODELS = {"unet": {"base_channels": 16}, "resnet34_unet": {"encoder_weights": None}}


def bare_step(model, optimizer, loss_fn, images, masks, device) -> None:
    """The model's own work for one batch: forward, loss, backward, optimizer step (fp32)."""
    training_step(model, optimizer, loss_fn, images, masks)


def _raw_steps(model, optimizer, loss_fn, images, masks, steps: int, device) -> float:
    """Seconds for ``steps`` bare steps on tensors already in place."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        bare_step(model, optimizer, loss_fn, images, masks, device)
    synchronize(device)
    return time.perf_counter() - start


def measure_train_efficiency(
    model_name: str,
    model_params: dict[str, Any],
    *,
    image_size: int = 64,
    batch_size: int = 16,
    n_images: int = 256,
    rounds: int = 3,
    device_name: str = "auto",
    work_dir: Path | None = None,
) -> dict[str, float]:
    """Images/s of train_one_epoch and of the bare step, and their ratio, for one model."""
    device = resolve_device(device_name)
    configure_device(device)
    channels_last = device.type in ("cuda", "cpu")
    work_dir = Path(work_dir or WORK_DIR)
    raw = build_raw(work_dir, n_images)  # synthetic photos, cached by the real preprocess
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        preprocess(raw, tmp, image_size=image_size, val_every=n_images + 1, progress=False)
        split = load_split(tmp, "train")
        torch.manual_seed(0)
        model = build_model(model_name, **model_params).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer("adamw", model, 1e-4, 1e-4, device)
        loss_fn = get_loss("bce+dice")
        data = SplitTensors(split, device, channels_last)
        augment = AugmentParams(
            hflip=0.5, vflip=0.5, rotate=0.0, scale=0.0, brightness=0.2, contrast=0.2, saturation=0.2
        )
        images, masks = data.batch(np.arange(batch_size))
        steps = len(split) // batch_size

        _raw_steps(model, optimizer, loss_fn, images, masks, 2, device)  # warm-up
        loop_rates, raw_rates = [], []
        for round_ in range(rounds):
            batches = epoch_batches(len(split), batch_size, seed=0, epoch=round_)
            generator = torch.Generator(device=device).manual_seed(round_)
            synchronize(device)
            stats = train_one_epoch(model, data, batches, optimizer, loss_fn, augment=augment, generator=generator)
            loop_rates.append(stats.images / stats.seconds)
            raw_rates.append(steps * batch_size / _raw_steps(model, optimizer, loss_fn, images, masks, steps, device))
    loop, raw = statistics.median(loop_rates), statistics.median(raw_rates)
    return {"train_images_per_s": loop, "step_images_per_s": raw, "train_efficiency_ratio": loop / raw}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    return parser


def main() -> None:
    args = build_parser().parse_args()
    for name in args.models:
        result = measure_train_efficiency(
            name,
            DEFAULT_MODELS[name],
            image_size=args.size,
            batch_size=args.batch,
            n_images=args.images,
            rounds=args.rounds,
            device_name=args.device,
        )
        for key, value in result.items():
            print(f"{name}_{key}: {value:.3f}")


if __name__ == "__main__":
    main()
