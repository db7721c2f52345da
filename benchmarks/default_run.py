"""The default `dvc repro` as a new user runs it, timed stage by stage on a fresh clone.

    python benchmarks/default_run.py            # writes benchmarks/default_run.json
    python benchmarks/default_run.py --update   # and brings the run's dvc.lock and outputs into this checkout

Clones the repository's last commit into a temporary folder and runs every
stage of dvc.yaml in pipeline order (`dvc repro -s <stage>`, so each stage's
time is its own), then reads the metrics the run produced. The total is what a
user waits for `dvc repro` on this machine (DVC's own start-up included).
With ``--update`` the run's dvc.lock and its git-tracked outputs (metrics/,
plots/, dvclive/) replace this checkout's, and its cached outputs (data/,
models/, predictions/) go into this checkout's DVC cache and workspace: what
to commit after a change that alters the default run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import torch

from petseg.precision import cpu_native_bf16

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("download", "preprocess", "train_unet", "train_resnet", "evaluate", "compare", "infer", "plot")
RESULTS = ROOT / "benchmarks" / "default_run.json"
TRACKED_OUTPUTS = ("metrics", "plots", "dvclive")  # cache: false outputs, committed to git


def repro_stages(project: Path, stages: Iterable[str]) -> dict[str, float]:
    """Seconds of `dvc repro --single-item` for each stage in turn (DVC's start-up included); a failure exits."""
    seconds: dict[str, float] = {}
    for stage in stages:
        begun = time.perf_counter()
        done = subprocess.run(
            ["dvc", "repro", "--single-item", stage], check=False, cwd=project, capture_output=True, text=True
        )
        if done.returncode:
            sys.exit(f"dvc repro -s {stage} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        seconds[stage] = round(time.perf_counter() - begun, 1)
        print(f"{stage}: {seconds[stage]} s", flush=True)
    return seconds


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (/proc/cpuinfo), or the platform's word for it."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:  # the generation, where the name alone does not say it
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine() -> dict[str, object]:
    """What a timing depends on: cores, CPU, its native bf16 (and why), torch."""
    native, why = cpu_native_bf16()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native,
        "native_bf16_reason": why,
        "torch": torch.__version__,
    }


def update_checkout(clone: Path) -> None:
    """Replace this checkout's dvc.lock and small outputs with the clone's, and take over its DVC cache."""
    for name in TRACKED_OUTPUTS:
        shutil.rmtree(ROOT / name, ignore_errors=True)
        shutil.copytree(clone / name, ROOT / name)
    shutil.copy2(clone / "dvc.lock", ROOT / "dvc.lock")
    shutil.copytree(clone / ".dvc" / "cache", ROOT / ".dvc" / "cache", dirs_exist_ok=True)
    subprocess.run(["dvc", "checkout", "--quiet", "--force"], cwd=ROOT, check=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="bring the run's dvc.lock and outputs into this checkout")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="petseg-default-run-") as scratch:
        clone = Path(scratch) / "petseg"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        seconds = repro_stages(clone, STAGES)
        metrics = {
            model: json.loads((clone / "metrics" / f"{model}.json").read_text()) for model in ("unet", "resnet34_unet")
        }
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
        ).stdout.strip()
        total = round(time.perf_counter() - started, 1)
        if args.update:
            update_checkout(clone)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "stage_seconds": seconds,
        "total_seconds": total,
        "dice_mean": {model: m["dice_mean"] for model, m in metrics.items()},
        "machine": machine(),
    }
    print(f"total: {result['total_seconds']} s")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
