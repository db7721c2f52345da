"""The default `dvc repro` as a new user runs it, timed stage by stage on a fresh clone.

    python benchmarks/default_run.py          # writes benchmarks/default_run.json

Clones the repository's last commit into a temporary folder and runs every
stage of dvc.yaml in pipeline order (`dvc repro -s <stage>`, so each stage's
time is its own), then reads the metrics the run produced. The total is what a
user waits for `dvc repro` on this machine (DVC's own start-up included).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from petseg.precision import cpu_native_bf16

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("download", "preprocess", "train_unet", "train_resnet", "evaluate", "compare", "infer", "plot")
RESULTS = ROOT / "benchmarks" / "default_run.json"


def main() -> None:
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="petseg-default-run-") as scratch:
        clone = Path(scratch) / "petseg"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        for stage in STAGES:
            begun = time.perf_counter()
            done = subprocess.run(["dvc", "repro", "--single-item", stage], cwd=clone, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"dvc repro -s {stage} failed:\n{(done.stdout + done.stderr)[-3000:]}")
            seconds[stage] = round(time.perf_counter() - begun, 1)
            print(f"{stage}: {seconds[stage]} s", flush=True)
        metrics = {model: json.loads((clone / "metrics" / f"{model}.json").read_text())
                   for model in ("unet", "resnet34_unet")}
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    native, why = cpu_native_bf16()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "stage_seconds": seconds,
        "total_seconds": round(time.perf_counter() - started, 1),
        "dice_mean": {model: m["dice_mean"] for model, m in metrics.items()},
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native,
                    "native_bf16_reason": why, "torch": torch.__version__},
    }
    print(f"total: {result['total_seconds']} s")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
