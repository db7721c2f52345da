"""The floor a model must clear: the test Dice of calling every pixel pet.

    python benchmarks/all_pet.py                          # writes benchmarks/all_pet.json
    python benchmarks/all_pet.py --cache data/cache       # from this checkout's cache instead of a fresh one

Without ``--cache`` it clones the repository's last commit into a temporary folder and runs
``dvc repro preprocess`` there (the default params.yaml: the synthetic set, cached at
``data.image_size``), then scores a prediction of all ones against the test split's masks with the
metric evaluation uses (per-image Dice, ``petseg.metrics.dice_from_counts``) and writes the mean,
median and image count with the commit, the params and the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from default_run import machine

from petseg.data.cache import load_split
from petseg.metrics import dice_from_counts, pixel_counts
from petseg.params import load_params

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "all_pet.json"


def all_pet_dice(cache_dir: Path) -> tuple[np.ndarray, int]:
    """Per-image Dice of a mask of all ones against each test image's true mask, and the cache's image size."""
    test = load_split(cache_dir, "test", mmap=False)
    masks = torch.from_numpy(test.masks)
    return dice_from_counts(pixel_counts(torch.ones_like(masks), masks)), test.image_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="a preprocessed cache (its test split); default: a fresh clone's")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the result file (default: %(default)s)")
    return parser


def score(cache_dir: Path, project: Path) -> dict[str, object]:
    dice, size = all_pet_dice(cache_dir)
    data = load_params(project / "params.yaml").data
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
        "data": {"source": data.source, "image_size": size, "seed": data.seed, "split": data.split},
        "n_images": len(dice),
        "dice_mean": float(dice.mean()),
        "dice_median": float(np.median(dice)),
        "machine": machine(),
    }


def main() -> None:
    args = build_parser().parse_args()
    if args.cache is not None:
        result = score(args.cache, ROOT)
    else:
        with tempfile.TemporaryDirectory(prefix="petseg-all-pet-") as scratch:
            clone = Path(scratch) / "petseg"
            subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
            done = subprocess.run(["dvc", "repro", "preprocess"], cwd=clone, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"dvc repro preprocess failed:\n{(done.stdout + done.stderr)[-3000:]}")
            result = score(clone / "data" / "cache", clone)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"every pixel called pet: per-image Dice {result['dice_mean']:.4f} over {result['n_images']} test images")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
