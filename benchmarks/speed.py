"""petseg's speed on this machine, in one run: `python benchmarks/speed.py`.

Prints one `name: value` line per figure (ratios end in `_ratio`) and writes
the same figures to benchmarks/results.json. Every ratio compares two ways of
doing the same work, measured in the same run and interleaved, so that the
ratio holds on any machine (and on a busy one) even when absolute speeds do not:

- preprocess_ratio: preprocess images/s over a plain one-process PIL loop on
  the same files (target >= 1.8 on 2 cores);
- <model>_train_efficiency_ratio: our training loop (cache batches, device
  augmentation, metrics) over the model's own forward + backward + optimizer
  step on ready tensors of the same batch (target >= 0.90);
- loader_speedup_ratio: our epoch over the reference reports' epoch (a
  DataLoader with 2 workers decoding, resizing and augmenting each JPEG with
  PIL) for the same small UNet, batch and images at 128 x 128 (target >= 1.2);
- eval_images_per_s, infer_images_per_s: evaluation of the test cache and
  inference on image files (masks and panels written);
- preprocess_peak_rss_mb_n / _2n: peak memory of preprocessing n and 2n images.

Uses the synthetic source only; finishes in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_preprocess
import numpy as np
import torch
from bench_train import bare_step, measure_train_efficiency
from PIL import Image

from petseg.checkpoint import Checkpoint, save_checkpoint
from petseg.data import layout
from petseg.data.cache import load_split
from petseg.data.preprocess import preprocess
from petseg.device import configure_device, resolve_device, synchronize
from petseg.evaluation import evaluate_checkpoint
from petseg.inference import infer_images
from petseg.losses import get_loss
from petseg.models import build_model
from petseg.params import AugmentParams, EvaluateParams
from petseg.training.batches import SplitTensors, epoch_batches
from petseg.training.loops import train_one_epoch
from petseg.training.optim import make_optimizer

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results.json"
WORK_DIR = BENCHMARKS / "work"
AUGMENT = AugmentParams(hflip=0.5, vflip=0.0, brightness=0.2, contrast=0.2, saturation=0.2)


# ------------------------------------------------------------------------ preprocess


def measure_preprocess(n_images: int, repeats: int) -> dict[str, float]:
    """bench_preprocess.measure in a fresh interpreter without torch, as the preprocess stage runs.

    Preprocessing forks its decoding workers; forking this process, which holds
    torch, costs them measurably (about 5-10% of the ratio here), and the stage
    never pays that.
    """
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_preprocess.py"), "--json", str(n_images),
                           str(repeats)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------- the reference reports' loader


class ReferenceDataset(torch.utils.data.Dataset):
    """Per-sample PIL decode, resize, flip and colour jitter: how the reference reports fed their models."""

    def __init__(self, raw: Path, names: list[str], size: int):
        from torchvision.transforms import ColorJitter

        self.raw, self.names, self.size = raw, names, size
        self.jitter = ColorJitter(brightness=AUGMENT.brightness, contrast=AUGMENT.contrast, saturation=AUGMENT.saturation)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms import functional as F

        name = self.names[index]
        image = Image.open(layout.image_path(self.raw, name)).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        trimap = Image.open(layout.trimap_path(self.raw, name)).resize((self.size, self.size), Image.NEAREST)
        image_tensor = F.to_tensor(image)
        mask = torch.from_numpy(np.asarray(trimap) != 2).float().unsqueeze(0)
        if torch.rand(()) < AUGMENT.hflip:
            image_tensor, mask = image_tensor.flip(-1), mask.flip(-1)
        return self.jitter(image_tensor), mask


def _reference_epoch(model, optimizer, loss_fn, loader, device) -> tuple[int, float]:
    model.train()
    seen, start = 0, time.perf_counter()
    for images, masks in loader:
        bare_step(model, optimizer, loss_fn, images.to(device), masks.to(device), device)
        seen += images.shape[0]
    synchronize(device)
    return seen, time.perf_counter() - start


def measure_loader_speedup(raw: Path, *, size: int = 128, batch_size: int = 16, base_channels: int = 16,
                           n_images: int = 256, rounds: int = 2, device_name: str = "auto") -> dict[str, float]:
    """Our epoch (cache + device augmentation, channels_last) against the reference DataLoader epoch."""
    device = resolve_device(device_name)
    configure_device(device)
    names = [entry.name for entry in layout.read_list(raw / layout.TRAINVAL_LIST)][:n_images]
    loss_fn = get_loss("bce+dice")
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as tmp:
        preprocess(raw, tmp, image_size=size, split="official", val_every=len(names) + 1, progress=False)
        split = load_split(tmp, "train")
        n = min(len(split), len(names))

        torch.manual_seed(0)
        ours_model = build_model("unet", base_channels=base_channels).to(device, memory_format=torch.channels_last)
        ours_optimizer = make_optimizer("adamw", ours_model, 1e-3, 1e-4, device)
        data = SplitTensors(split, device, channels_last=True)

        torch.manual_seed(0)
        reference_model = build_model("unet", base_channels=base_channels).to(device)
        reference_optimizer = torch.optim.AdamW(reference_model.parameters(), lr=1e-3, weight_decay=1e-4)
        loader = torch.utils.data.DataLoader(
            ReferenceDataset(raw, split.names[:n], size), batch_size=batch_size, shuffle=True, num_workers=2,
            drop_last=True, pin_memory=device.type == "cuda",
        )

        ours_rates, reference_rates = [], []
        for round_ in range(rounds + 1):  # round 0 warms both up
            batches = epoch_batches(n, batch_size, seed=0, epoch=round_)
            generator = torch.Generator(device=device).manual_seed(round_)
            synchronize(device)
            stats = train_one_epoch(ours_model, data, batches, ours_optimizer, loss_fn, augment=AUGMENT, generator=generator)
            seen, seconds = _reference_epoch(reference_model, reference_optimizer, loss_fn, loader, device)
            if round_:
                ours_rates.append(stats.images / stats.seconds)
                reference_rates.append(seen / seconds)
    ours, reference = statistics.median(ours_rates), statistics.median(reference_rates)
    return {
        "loader_ours_images_per_s": ours,
        "loader_reference_images_per_s": reference,
        "loader_speedup_ratio": ours / reference,
    }


# ------------------------------------------------------------------ eval and infer


def measure_eval_and_infer(raw: Path, *, size: int = 128, base_channels: int = 16, n_images: int = 64,
                           device_name: str = "auto") -> dict[str, float]:
    """Images/s of evaluation (test cache) and of inference on image files, for one UNet checkpoint."""
    device = resolve_device(device_name)
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as tmp:
        tmp = Path(tmp)
        preprocess(raw, tmp / "cache", image_size=size, progress=False)
        split = load_split(tmp / "cache", "test")
        torch.manual_seed(0)
        model = build_model("unet", base_channels=base_channels)
        checkpoint = tmp / "best.pt"
        save_checkpoint(checkpoint, Checkpoint(model_name="unet", model_params={"base_channels": base_channels},
                                               model=model.state_dict(), image_size=size, epoch=1, val_dice=0.0))
        config = EvaluateParams(threshold=0.5, tta=False, n_worst=0, batch_size=32)
        evaluate_checkpoint(checkpoint, split, config, device)  # warm-up
        start = time.perf_counter()
        evaluation = evaluate_checkpoint(checkpoint, split, config, device)
        eval_rate = len(evaluation.dice) / (time.perf_counter() - start)

        inputs = [layout.image_path(raw, name) for name in split.names[:n_images]]
        start = time.perf_counter()
        result = infer_images(checkpoint, inputs, tmp / "predictions", device=device_name, progress=False,
                              trimaps_dir=raw / layout.TRIMAPS_DIR)
        infer_rate = len(result.written) / (time.perf_counter() - start)
    return {"eval_images_per_s": eval_rate, "infer_images_per_s": infer_rate}


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds (a smoke run, not a measurement)")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the JSON results")
    args = parser.parse_args()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    results: dict[str, Any] = {}

    def report(figures: dict[str, float]) -> None:
        for key, value in figures.items():
            results[key] = round(float(value), 3)
            print(f"{key}: {results[key]:g}", flush=True)

    started = time.perf_counter()
    report(measure_preprocess(n_images=64 if quick else 800, repeats=1 if quick else 3))
    raw = bench_preprocess.build_raw(WORK_DIR, 128 if quick else 1600)
    for name, params in (("unet", {"base_channels": 16}), ("resnet34_unet", {"encoder_weights": None})):
        figures = measure_train_efficiency(name, params, image_size=64, batch_size=16, n_images=64 if quick else 256,
                                           rounds=2 if quick else 6, device_name=args.device)
        report({f"{name}_{key}": value for key, value in figures.items()})
    report(measure_loader_speedup(raw, n_images=64 if quick else 256, rounds=1 if quick else 2, device_name=args.device))
    report(measure_eval_and_infer(raw, n_images=16 if quick else 64, device_name=args.device))
    report({"benchmark_seconds": time.perf_counter() - started})

    device = resolve_device(args.device)
    results["_machine"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "quick": quick,
    }
    output = Path(args.output)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {output}")


if __name__ == "__main__":
    main()
