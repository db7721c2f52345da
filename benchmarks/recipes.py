"""Training recipes compared on real photos: the shared Oxford-IIIT Pet sample, several seeds per variant.

    python benchmarks/recipes.py precision          # fp32 vs bf16, both models (issue: mixed precision)
    python benchmarks/recipes.py recipes            # loss, lr and schedule, batch, augmentation, width
    python benchmarks/recipes.py recipes --report   # the table only, from the recorded runs

The sample (``../shared/data/oxford-pet-sample``, 199 listed real photos) is cut
once, with a fixed seed, into train (70%), validation (15%) and a held-out test
set (15%), cached at 128 x 128 by the real preprocess stage. Every variant
changes one thing from a base recipe and trains with each seed; the checkpoint
of its best validation epoch is then scored on the held-out set in exact fp32.
Variants are chosen on validation Dice; the held-out Dice only confirms the
choice. Each run is recorded as it finishes in ``benchmarks/studies/<study>.json``
(date, machine, validation and held-out Dice, seconds per epoch), so an
interrupted study continues where it stopped and the table can be rebuilt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from petseg.checkpoint import load_checkpoint
from petseg.data.cache import load_split
from petseg.data.preprocess import preprocess
from petseg.evaluation.scoring import evaluate_checkpoint
from petseg.params import AugmentParams, EvaluateParams, TrainParams, load_params
from petseg.training import fit

BENCHMARKS = Path(__file__).resolve().parent
SAMPLE = BENCHMARKS.parents[1] / "shared" / "data" / "oxford-pet-sample"
STUDIES = BENCHMARKS / "studies"
WORK = BENCHMARKS / "work"
SIZE = 128
SPLIT_SEED = 2024
SEEDS = (0, 1, 2)

# The second reference report's recipe at 128 px: BCE, AdamW 1e-3 (weight decay 1e-2), OneCycle, batch 8,
# horizontal flips and colour jitter 0.2. Every recipe variant changes one thing from it.
BASE_TRAIN = {
    "lr": 1e-3,
    "weight_decay": 1e-2,
    "loss": "bce",
    "optimizer": "adamw",
    "scheduler": "onecycle",
    "augment": {
        "hflip": 0.5,
        "vflip": 0.0,
        "rotate": 0.0,
        "scale": 0.0,
        "brightness": 0.2,
        "contrast": 0.2,
        "saturation": 0.2,
    },
    "device": "cpu",
    "precision": "fp32",
    "compile": False,
    "nproc_per_node": 1,
}
BASE_MODELS = {
    "unet": {"base_channels": 16, "batch_size": 8},
    "resnet34_unet": {"encoder_weights": None, "batch_size": 8},
}

# study -> variant -> (model, epochs, overrides of train.* and models.<model>.*)
STUDY_PLANS: dict[str, dict[str, tuple[str, int, dict[str, Any]]]] = {
    "precision": {
        "unet fp32": ("unet", 8, {}),
        "unet bf16": ("unet", 8, {"precision": "bf16"}),
        "resnet34_unet fp32": ("resnet34_unet", 5, {}),
        "resnet34_unet bf16": ("resnet34_unet", 5, {"precision": "bf16"}),
    },
    "recipes": {
        "unet base (report 2)": ("unet", 15, {}),
        "unet loss dice": ("unet", 15, {"loss": "dice"}),
        "unet loss bce+dice": ("unet", 15, {"loss": "bce+dice"}),
        "unet lr 3e-3": ("unet", 15, {"lr": 3e-3}),
        "unet lr 3e-4": ("unet", 15, {"lr": 3e-4}),
        "unet cosine": ("unet", 15, {"scheduler": "cosine"}),
        "unet batch 16": ("unet", 15, {"batch_size": 16}),
        "unet no flips": ("unet", 15, {"augment": {"hflip": 0.0}}),
        "unet no jitter": ("unet", 15, {"augment": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0}}),
        "unet rotate 15": ("unet", 15, {"augment": {"rotate": 15.0}}),
        "unet scale 0.2": ("unet", 15, {"augment": {"scale": 0.2}}),
        "unet width 32": ("unet", 15, {"base_channels": 32}),
        "resnet34_unet base (report 2)": ("resnet34_unet", 10, {}),
        "resnet34_unet loss bce+dice": ("resnet34_unet", 10, {"loss": "bce+dice"}),
        "resnet34_unet rotate+scale": ("resnet34_unet", 10, {"augment": {"rotate": 15.0, "scale": 0.2}}),
    },
}


def sample_cache(sample: Path = SAMPLE) -> Path:
    """The shared sample cut into train/val/held-out and cached at SIZE (built once)."""
    cache = WORK / f"sample-cache-{SIZE}-split{SPLIT_SEED}"
    if not (cache / "report.json").is_file():
        preprocess(
            sample,
            cache,
            image_size=SIZE,
            split="random",
            split_fractions=(0.7, 0.15, 0.15),
            seed=SPLIT_SEED,
            progress=False,
        )
    return cache


def run_config(model: str, epochs: int, overrides: dict[str, Any], seed: int) -> tuple[TrainParams, Any]:
    """The typed train and model params of one run."""
    defaults = load_params(BENCHMARKS.parent / "params.yaml")
    train = {**BASE_TRAIN, **{k: v for k, v in overrides.items() if k in BASE_TRAIN}, "epochs": epochs, "seed": seed}
    train["augment"] = AugmentParams(**{**BASE_TRAIN["augment"], **overrides.get("augment", {})})
    model_section = {**BASE_MODELS[model], **{k: v for k, v in overrides.items() if k in BASE_MODELS[model]}}
    return (
        dataclasses.replace(defaults.train, **train),
        dataclasses.replace(defaults.models.section(model), **model_section),
    )


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }


def train_and_score(cache: Path, model: str, epochs: int, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    train, model_params = run_config(model, epochs, overrides, seed)
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        started = time.perf_counter()
        result = fit(model, model_params, train, cache, Path(scratch) / "model", progress=False)
        seconds = time.perf_counter() - started
        best = Path(scratch) / "model" / "best.pt"
        test = load_split(cache, "test")
        held_out = evaluate_checkpoint(best, test, EvaluateParams(0.5, False, 0, 32), "cpu")
        held_out_tta = evaluate_checkpoint(best, test, EvaluateParams(0.5, True, 0, 32), "cpu")
        epoch_seconds = load_checkpoint(Path(scratch) / "model" / "last.pt").epoch_seconds
    return {
        "val_dice": result.best_dice,
        "best_epoch": result.best_epoch,
        "heldout_dice": held_out.summary["dice_mean"],
        "heldout_dice_tta": held_out_tta.summary["dice_mean"],
        "seconds_per_epoch": statistics.median(epoch_seconds),
        "seconds": seconds,
    }


def summarize(records: list[dict[str, Any]]) -> list[str]:
    """A Markdown table: mean and sample standard deviation over seeds, per variant."""
    lines = [
        "| variant | epochs | seeds | validation Dice | held-out Dice | held-out, flip TTA | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["variant"] for r in records):
        runs = [r for r in records if r["variant"] == variant]

        def cell(key: str, runs: list[dict[str, Any]] = runs) -> str:
            values = [r[key] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} ± {spread:.3f}"

        seconds = statistics.median(r["seconds_per_epoch"] for r in runs)
        tta = cell("heldout_dice_tta") if all("heldout_dice_tta" in r for r in runs) else "not recorded"
        lines.append(
            f"| {variant} | {runs[0]['epochs']} | {len(runs)} | {cell('val_dice')} | {cell('heldout_dice')} | "
            f"{tta} | {seconds:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=sorted(STUDY_PLANS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--only", nargs="*", help="run only these variants")
    parser.add_argument("--report", action="store_true", help="print the table of the recorded runs only")
    args = parser.parse_args()
    path = STUDIES / f"{args.study}.json"
    records = json.loads(path.read_text()) if path.is_file() else []
    if not args.report:
        if not SAMPLE.is_dir():
            raise SystemExit(f"{SAMPLE}: the shared sample of real photos is not here")
        WORK.mkdir(parents=True, exist_ok=True)
        STUDIES.mkdir(parents=True, exist_ok=True)
        cache = sample_cache()
        for variant, (model, epochs, overrides) in STUDY_PLANS[args.study].items():
            if args.only and variant not in args.only:
                continue
            for seed in args.seeds:
                if any(r["variant"] == variant and r["seed"] == seed for r in records):
                    continue
                record = {
                    "variant": variant,
                    "model": model,
                    "epochs": epochs,
                    "seed": seed,
                    "overrides": overrides,
                    **train_and_score(cache, model, epochs, overrides, seed),
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine(),
                }
                records.append(record)
                path.write_text(json.dumps(records, indent=1) + "\n")
                print(
                    f"{variant} seed {seed}: validation Dice {record['val_dice']:.4f}, held-out "
                    f"{record['heldout_dice']:.4f}, {record['seconds_per_epoch']:.1f} s/epoch",
                    flush=True,
                )
    print("\n".join(summarize(records)))


if __name__ == "__main__":
    main()
