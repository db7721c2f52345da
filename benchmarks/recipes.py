"""Training recipes compared on real photos: the shared Oxford-IIIT Pet sample, several seeds per variant.

    python benchmarks/recipes.py precision          # fp32 vs bf16, both models (issue: mixed precision)
    python benchmarks/recipes.py recipes            # loss, lr and schedule, batch, augmentation, width
    python benchmarks/recipes.py recipes --report   # the table only, from the recorded runs
    python benchmarks/recipes.py final              # both models: the report's recipe against ours, 15 epochs
    python benchmarks/recipes.py final --report     # its table and the two-level intervals
    python benchmarks/recipes.py final --redo --only "resnet34_unet report 2"   # train recorded runs again
    python benchmarks/recipes.py final --rescore    # new prediction recipes on the kept weights, no training

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
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petseg.checkpoint import load_checkpoint, save_checkpoint
from petseg.compare.stats import seed_difference
from petseg.data.cache import Split, load_split
from petseg.data.preprocess import preprocess
from petseg.evaluation.scoring import evaluate_checkpoint
from petseg.metrics import dice_from_counts, pixel_counts
from petseg.params import AugmentParams, EvaluateParams, TrainParams, load_params
from petseg.postprocess import postprocess_masks
from petseg.predict import Predictor, model_input
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
    "ema": 0.0,
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
    # Both models at the report's budget (same images, size and epochs): its recipe, and the loss change;
    # every checkpoint is also scored under each prediction recipe (PREDICTION), so flip TTA and the
    # largest-region post-processing are measured on the very runs they change.
    "final": {
        "unet report 2": ("unet", 15, {}),
        "unet bce+dice": ("unet", 15, {"loss": "bce+dice"}),
        "resnet34_unet report 2": ("resnet34_unet", 15, {}),
        "resnet34_unet bce+dice": ("resnet34_unet", 15, {"loss": "bce+dice"}),
        # twice the optimizer steps in the same epochs
        "unet batch 4": ("unet", 15, {"batch_size": 4}),
        "resnet34_unet batch 4": ("resnet34_unet", 15, {"batch_size": 4}),
        # a moving average of the weights (train.ema), validated and kept as the checkpoint; in these
        # 270-step runs the warm-up keeps the decay below 0.97 throughout
        "unet ema 0.99": ("unet", 15, {"ema": 0.99}),
        "resnet34_unet ema 0.99": ("resnet34_unet", 15, {"ema": 0.99}),
        # a deep batch-normed encoder from scratch may take a higher peak lr than the UNet (which did worse)
        "resnet34_unet lr 3e-3": ("resnet34_unet", 15, {"lr": 3e-3}),
    },
}
# prediction recipe -> (flip TTA, evaluate.postprocess, multi-scale factors: multi_scale_probabilities); runs
# recorded before a recipe existed lack its scores, and the tables leave them out
MULTI_SCALE = (0.75, 1.0, 1.25)
PREDICTION = {
    "plain": (False, "none", (1.0,)),
    "tta": (True, "none", (1.0,)),
    "largest": (False, "largest", (1.0,)),
    "tta+largest": (True, "largest", (1.0,)),
    "ms+tta": (True, "none", MULTI_SCALE),
    "ms+tta+largest": (True, "largest", MULTI_SCALE),
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


def keep_path(study: str, variant: str, seed: int) -> Path:
    """Where a run's best weights are kept (benchmarks/work, not committed)."""
    return WORK / "checkpoints" / study / variant.replace(" ", "_") / f"seed{seed}.pt"


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }


@torch.inference_mode()
def multi_scale_probabilities(
    model: torch.nn.Module, images: torch.Tensor, scales: Sequence[float], tta: bool
) -> torch.Tensor:
    """Multi-scale test-time augmentation: pet probabilities (N x 1 x H x W) averaged over resized images.

    The images (float, in [0, 1]) are resized by each factor (bilinear, antialiased when shrinking; a side is
    rounded to a multiple of 32, which every registered network accepts), with their horizontal flip too when
    ``tta``; each map is flipped and resized back, and the maps are averaged. A study's recipe, not petseg's:
    petseg.predict has flip TTA only.
    """
    height, width = images.shape[-2:]
    maps = []
    for scale in scales:
        size = (max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32))
        scaled = images
        if size != (height, width):
            scaled = torch.nn.functional.interpolate(images, size=size, mode="bilinear", antialias=size[0] < height)
        views = [scaled, scaled.flip(-1)] if tta else [scaled]
        for index, view in enumerate(views):
            prob = torch.sigmoid(model(view).float())
            if index == 1:
                prob = prob.flip(-1)
            if size != (height, width):
                prob = torch.nn.functional.interpolate(prob, size=(height, width), mode="bilinear")
            maps.append(prob)
    result = maps[0]
    for prob in maps[1:]:
        result = result + prob
    return result / len(maps) if len(maps) > 1 else result


def multi_scale_dice(checkpoint: Path, split: Split, config: EvaluateParams, scales: Sequence[float]) -> np.ndarray:
    """Per-image Dice of a checkpoint on a cache split, predicted with multi-scale TTA, on the CPU in float32.

    Thresholded and post-processed as evaluate_checkpoint does (petseg.evaluation.scoring).
    """
    predictor = Predictor(checkpoint, "cpu")
    counts = []
    for start in range(0, len(split), config.batch_size):
        rows = slice(start, start + config.batch_size)
        probabilities = multi_scale_probabilities(
            predictor.model, model_input(split.images[rows], predictor.device), scales, config.tta
        )
        predicted = postprocess_masks((probabilities > config.threshold)[:, 0], config.postprocess)
        truth = torch.from_numpy(np.array(split.masks[rows], dtype=np.uint8)).bool()
        counts.append(pixel_counts(predicted, truth).numpy())
    return dice_from_counts(np.concatenate(counts))


def score(checkpoint: Path, cache: Path, recipes: Iterable[str]) -> dict[str, dict[str, list[float]]]:
    """Per-image Dice of a checkpoint on the validation and held-out images (split -> recipe -> list)."""
    per_image = {}
    for split in ("val", "test"):
        images = load_split(cache, split)
        per_image[split] = {}
        for recipe in recipes:
            tta, post, scales = PREDICTION[recipe]
            config = EvaluateParams(0.5, tta, 0, 32, post)
            if tuple(scales) == (1.0,):
                dice = evaluate_checkpoint(checkpoint, images, config, "cpu").table.scores["dice"]
            else:
                dice = multi_scale_dice(checkpoint, images, config, scales)
            per_image[split][recipe] = dice.tolist()
    return per_image


def rescore(records: list[dict[str, Any]], study: str, cache: Path, only: list[str] | None, path: Path) -> None:
    """Score recorded runs under the prediction recipes they lack, from their kept weights (no training)."""
    for record in records:
        if (only and record["variant"] not in only) or "per_image_dice" not in record:
            continue  # runs recorded without per-image scores have no recipes to add to
        missing = [recipe for recipe in PREDICTION if recipe not in record["per_image_dice"]["test"]]
        if not missing:
            continue
        kept = keep_path(study, record["variant"], record["seed"])
        if not kept.is_file():
            print(f"{record['variant']} seed {record['seed']}: no kept weights at {kept}; --redo trains it again")
            continue
        for split, scores in score(kept, cache, missing).items():
            record["per_image_dice"][split].update(scores)
        path.write_text(json.dumps(records, indent=1) + "\n")
        print(f"{record['variant']} seed {record['seed']}: scored {', '.join(missing)}", flush=True)


def train_and_score(
    cache: Path, model: str, epochs: int, overrides: dict[str, Any], seed: int, keep: Path
) -> dict[str, Any]:
    """Train one run, score its best checkpoint every PREDICTION way, and keep its weights at ``keep``."""
    train, model_params = run_config(model, epochs, overrides, seed)
    with tempfile.TemporaryDirectory(dir=WORK) as scratch:
        started = time.perf_counter()
        result = fit(model, model_params, train, cache, Path(scratch) / "model", progress=False)
        seconds = time.perf_counter() - started
        best = Path(scratch) / "model" / "best.pt"
        per_image = score(best, cache, PREDICTION)
        epoch_seconds = load_checkpoint(Path(scratch) / "model" / "last.pt").epoch_seconds
        weights = dataclasses.replace(load_checkpoint(best), optimizer=None, scheduler=None, scaler=None, rng=None)
        keep.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(keep, weights)  # weights only: what --rescore needs for a new prediction recipe
    return {
        "val_dice": result.best_dice,
        "best_epoch": result.best_epoch,
        "heldout_dice": statistics.mean(per_image["test"]["plain"]),
        "heldout_dice_tta": statistics.mean(per_image["test"]["tta"]),
        "per_image_dice": per_image,  # split -> prediction recipe -> Dice per image, in the cache's order
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


def _variants(records: list[dict[str, Any]]) -> list[str]:
    """The recorded variants, model by model, the report's recipe first, then in the order they were run."""
    variants = list(dict.fromkeys(r["variant"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    model_of = {r["variant"]: r["model"] for r in records}
    return sorted(
        variants,
        key=lambda v: (models.index(model_of[v]), v != f"{model_of[v]} report 2", variants.index(v)),
    )


def _recipes(records: list[dict[str, Any]], variant: str) -> list[str]:
    """The prediction recipes every run of ``variant`` was scored with."""
    runs = [r for r in records if r["variant"] == variant]
    return [recipe for recipe in PREDICTION if all(recipe in r["per_image_dice"]["test"] for r in runs)]


def _table(records: list[dict[str, Any]], variant: str, split: str, recipe: str) -> np.ndarray:
    """Runs x images Dice of one variant under one prediction recipe, runs in seed order."""
    runs = sorted((r for r in records if r["variant"] == variant), key=lambda r: r["seed"])
    return np.array([r["per_image_dice"][split][recipe] for r in runs])


def final_report(records: list[dict[str, Any]]) -> list[str]:
    """Mean ± sd over seeds per variant and prediction recipe, then two-level intervals against the report."""
    records = [r for r in records if "per_image_dice" in r]
    lines = [
        "| model | training | prediction | seeds | validation Dice | held-out Dice | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in _variants(records):
        model, training = variant.split(" ", 1)
        seconds = statistics.median(r["seconds_per_epoch"] for r in records if r["variant"] == variant)
        for recipe in _recipes(records, variant):
            cells = []
            for split in ("val", "test"):
                means = _table(records, variant, split, recipe).mean(axis=1)
                spread = statistics.stdev(means) if len(means) > 1 else 0.0
                cells.append(f"{means.mean():.4f} ± {spread:.4f}")
            row = f"| {model} | {training} | {recipe} | {len(means)} | {cells[0]} | {cells[1]} | {seconds:.1f} |"
            lines.append(row)
    lines += [
        "",
        "Held-out Dice minus the report's recipe (plain prediction), 95% interval over seeds and held-out images "
        "(petseg.compare.stats.seed_difference: paired by run for a prediction change, independent runs for a "
        "training change); mde: the smallest difference this comparison detects with 80% power:",
        "",
        "| model | recipe | difference | 95% interval | mde | seeds | images | detectable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in records):
        reference = f"{model} report 2"
        if not any(r["variant"] == reference for r in records):
            continue
        base = _table(records, reference, "test", "plain")
        for variant in (v for v in _variants(records) if v.startswith(model + " ")):
            for recipe in _recipes(records, variant):
                if variant == reference and recipe == "plain":
                    continue
                table = _table(records, variant, "test", recipe)
                same = variant == reference and table.shape == base.shape
                d = seed_difference(table, base, same_runs=same)
                verdict = "yes" if d.detectable else "no"
                training = variant.split(" ", 1)[1]
                lines.append(
                    f"| {model} | {training}, {recipe} | {d.diff:+.4f} | [{d.low:+.4f}, {d.high:+.4f}] | "
                    f"{d.mde:.4f} | {d.n_seeds_a} vs {d.n_seeds_b} | {d.n_images} | {verdict} |"
                )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=sorted(STUDY_PLANS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--only", nargs="*", help="run only these variants")
    parser.add_argument("--report", action="store_true", help="print the table of the recorded runs only")
    parser.add_argument(
        "--redo",
        action="store_true",
        help="train recorded runs again (to keep their weights and score new prediction recipes); "
        "says whether each one reproduced its recorded Dice",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score recorded runs under the prediction recipes they lack, from their kept weights (no training)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    path = STUDIES / f"{args.study}.json"
    records = json.loads(path.read_text()) if path.is_file() else []
    if not args.report:
        if not SAMPLE.is_dir():
            raise SystemExit(f"{SAMPLE}: the shared sample of real photos is not here")
        WORK.mkdir(parents=True, exist_ok=True)
        STUDIES.mkdir(parents=True, exist_ok=True)
        cache = sample_cache()
        if args.rescore:
            rescore(records, args.study, cache, args.only, path)
        for variant, (model, epochs, overrides) in STUDY_PLANS[args.study].items():
            if args.rescore or (args.only and variant not in args.only):
                continue
            for seed in args.seeds:
                old = next((r for r in records if r["variant"] == variant and r["seed"] == seed), None)
                if old is not None and not args.redo:
                    continue
                record = {
                    "variant": variant,
                    "model": model,
                    "epochs": epochs,
                    "seed": seed,
                    "overrides": overrides,
                    **train_and_score(cache, model, epochs, overrides, seed, keep_path(args.study, variant, seed)),
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine(),
                }
                if old is not None:
                    records.remove(old)
                    same = old["per_image_dice"]["test"]["plain"] == record["per_image_dice"]["test"]["plain"]
                    print(f"{variant} seed {seed}: {'reproduced' if same else 'did NOT reproduce'} its recorded Dice")
                    record["reproduced"] = same
                    if same:  # the first run's timing stands (a redo may share the CPU); this one's is kept beside
                        record["redo"] = {k: record[k] for k in ("date", "seconds_per_epoch", "seconds")}
                        record.update({k: old[k] for k in ("date", "seconds_per_epoch", "seconds")})
                records.append(record)
                path.write_text(json.dumps(records, indent=1) + "\n")
                print(
                    f"{variant} seed {seed}: validation Dice {record['val_dice']:.4f}, held-out "
                    f"{record['heldout_dice']:.4f}, {record['seconds_per_epoch']:.1f} s/epoch",
                    flush=True,
                )
    print("\n".join(final_report(records) if args.study == "final" else summarize(records)))


if __name__ == "__main__":
    main()
