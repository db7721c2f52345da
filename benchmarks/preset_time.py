"""How long a params preset takes on this machine, measured on a synthetic set of the real dataset's size.

    python benchmarks/preset_time.py configs/laptop.yaml        # writes benchmarks/preset_time_laptop.json
    python benchmarks/preset_time.py configs/laptop.yaml --budget-minutes 30 --trainval 368 --test 367

The real archives cannot always be fetched, so the preset runs on generated
photos of the real sizes and counts (3680 trainval, of which 3312 train and 368
validation, and 3669 test) with everything else as the preset says. Each model
trains ``--epochs`` epochs (default 1) through `dvc repro` in a temporary copy of
the project; the measured seconds per epoch (training plus validation) give the
projected training time of the preset's own epoch count, and the other stages
are timed as they run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from default_run import machine, repro_stages
from ruamel.yaml import YAML

from petseg.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
REAL_COUNTS = {"n_trainval": 3680, "n_test": 3669}
TRAIN_STAGES = {"unet": "train_unet", "resnet34_unet": "train_resnet"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", type=Path)
    parser.add_argument("--epochs", type=int, default=1, help="epochs measured per model")
    parser.add_argument("--budget-minutes", type=float, help="print the train.epochs that fits this much training here")
    parser.add_argument(
        "--trainval",
        type=int,
        default=REAL_COUNTS["n_trainval"],
        help="train + validation images to measure on (fewer is quicker; epochs are scaled to the real count)",
    )
    parser.add_argument(
        "--test",
        type=int,
        default=REAL_COUNTS["n_test"],
        help="test images to evaluate (fewer is quicker; the evaluate time is scaled to the real count)",
    )
    parser.add_argument("--out", type=Path, help="the result file (default: benchmarks/preset_time_<preset>.json)")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    if not 20 <= args.trainval <= REAL_COUNTS["n_trainval"]:
        parser.error(f"--trainval must be between 20 and {REAL_COUNTS['n_trainval']}")
    if not 2 <= args.test <= REAL_COUNTS["n_test"]:
        parser.error(f"--test must be between 2 and {REAL_COUNTS['n_test']}")
    yaml = YAML()
    preset = yaml.load(args.preset)
    planned_epochs = int(preset["train"]["epochs"])
    with tempfile.TemporaryDirectory(prefix="petseg-preset-time-") as scratch:
        project = Path(scratch) / "petseg"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(project)], check=True)
        shutil.copy(args.preset, project / "params.yaml")
        params = yaml.load(project / "params.yaml")
        params["data"]["source"] = "synthetic"
        params["data"]["synthetic"].update(REAL_COUNTS)
        params["data"]["synthetic"]["n_trainval"] = args.trainval
        params["data"]["synthetic"]["n_test"] = args.test
        params["train"]["epochs"] = args.epochs
        params["models"]["resnet34_unet"]["encoder_weights"] = None  # the same speed, and no download needed
        yaml.dump(params, project / "params.yaml")
        seconds = repro_stages(project, ("download", "preprocess", *TRAIN_STAGES.values(), "evaluate"))
        evaluate_scale = REAL_COUNTS["n_test"] / args.test  # evaluation time is proportional to the test images
        per_epoch = {}
        scale = REAL_COUNTS["n_trainval"] / args.trainval  # an epoch's time is proportional to its images
        for model in TRAIN_STAGES:
            checkpoint = load_checkpoint(project / "models" / model / "last.pt")
            per_epoch[model] = {
                "seconds_per_epoch": round(scale * sum(checkpoint.epoch_seconds) / len(checkpoint.epoch_seconds), 1),
                "precision": checkpoint.signature["precision"],
            }
    training = sum(planned_epochs * m["seconds_per_epoch"] for m in per_epoch.values())
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preset": str(args.preset),
        "image_size": int(preset["data"]["image_size"]),
        "planned_epochs": planned_epochs,
        "measured_epochs": args.epochs,
        "measured_trainval_images": args.trainval,
        "measured_test_images": args.test,
        "stage_seconds": seconds,
        "per_epoch": per_epoch,
        "projected_training_minutes": round(training / 60, 1),
        "projected_preprocess_train_evaluate_minutes": round(
            (training + seconds["preprocess"] + evaluate_scale * seconds["evaluate"]) / 60, 1
        ),
        "machine": machine(),
    }
    if args.budget_minutes is not None:
        per_both = sum(m["seconds_per_epoch"] for m in per_epoch.values())
        fits = int(args.budget_minutes * 60 // per_both)  # 0: not even one epoch of both models fits
        result["budget_minutes"] = args.budget_minutes
        result["epochs_that_fit"] = fits
    out = args.out or ROOT / "benchmarks" / f"preset_time_{args.preset.stem}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {out}")
    if args.budget_minutes is not None and result["epochs_that_fit"] == 0:
        print(
            f"not even one epoch of both models fits {args.budget_minutes:g} minutes here "
            f"({per_both / 60:.1f} min per epoch of both): raise --budget-minutes, or lower data.image_size"
        )
    elif args.budget_minutes is not None:
        print(
            f"train.epochs that fits {args.budget_minutes:g} minutes of training here (both models, "
            f"{per_both / 60:.1f} min per epoch of both): {result['epochs_that_fit']}\n"
            f"  cp {args.preset} params.yaml && dvc exp run -S train.epochs={result['epochs_that_fit']}"
        )


if __name__ == "__main__":
    main()
