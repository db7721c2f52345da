"""The CUDA check: real-size training through `dvc repro`, torch.compile on and off, an exact resume, projections.

    python benchmarks/gpu_check.py            # on a machine with an NVIDIA GPU; elsewhere it says so and exits 0

In a temporary copy of the project it generates a synthetic set of the real
size (3680 trainval and 3669 test photos, 256 x 256) and runs `dvc repro` for
2 epochs of each model at the reference batch sizes (UNet base 64: 32;
ResNet34-UNet: 128) with `train.precision: auto` and channels_last, first with
`train.compile: false`, then with `true`. It then kills a UNet run during its
second epoch, resumes it, and compares the weights with an uninterrupted run
(and with a second uninterrupted run, which shows how deterministic the GPU
itself is). It prints train and eval images/s per model and the projected time
of a 50-epoch run of each on the full dataset (3312 train + 368 validation
images), and writes them to benchmarks/gpu_results.json with the GPU's name and
the date. Meant to finish within 8 minutes on one recent GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from ruamel.yaml import YAML

from petseg.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "gpu_results.json"
FULL_TRAIN, FULL_VAL, FULL_TEST = 3312, 368, 3669
REAL_SIZE = {
    "data.synthetic.n_trainval": 3680,
    "data.synthetic.n_test": 3669,
    "data.image_size": 256,
    "train.epochs": 2,
    "train.precision": "auto",
    "train.compile": False,
    "train.device": "cuda",
    "models.unet.base_channels": 64,
    "models.unet.batch_size": 32,
    "models.resnet34_unet.batch_size": 128,
    "evaluate.batch_size": 64,
    "evaluate.n_worst": 4,
}
SMOKE = {
    "data.synthetic.n_trainval": 40,
    "data.synthetic.n_test": 12,
    "data.image_size": 32,
    "train.device": "cpu",
    "models.unet.base_channels": 4,
    "models.unet.batch_size": 4,
    "models.resnet34_unet.batch_size": 4,
    "evaluate.batch_size": 8,
}
MODELS = {"unet": "train_unet", "resnet34_unet": "train_resnet"}


def copy_project(target: Path) -> Path:
    """The project's files (tracked and untracked, not ignored) in a new git repository at ``target``."""
    names = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "gpu check"]):
        subprocess.run(["git", "-c", "user.email=gpu@check", "-c", "user.name=gpu", *args], cwd=target, check=True)
    return target


def set_params(project: Path, values: dict[str, Any]) -> None:
    yaml = YAML()
    params = yaml.load(project / "params.yaml")
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    yaml.dump(params, project / "params.yaml")


def run(project: Path, *command: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        command, check=False, cwd=project, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def throughput(project: Path, model: str, n_train: int, n_val: int) -> dict[str, float]:
    """Images/s of the last (steady) epoch, the first epoch's extra seconds (warm-up, compilation), eval images/s."""
    checkpoint = load_checkpoint(project / "models" / model / "last.pt")
    seconds = checkpoint.epoch_seconds
    metrics = json.loads((project / "metrics" / f"{model}.json").read_text())
    return {
        "train_images_per_s": round((n_train + n_val) / seconds[-1], 1),
        "first_epoch_extra_s": round(seconds[0] - seconds[-1], 1),
        "epoch_s": round(seconds[-1], 2),
        "eval_images_per_s": metrics["eval_images_per_s"],
        "precision": checkpoint.signature["precision"],
        "test_dice_after_2_epochs": round(metrics["dice_mean"], 4),
    }


def train_command(out: str, live: str) -> list[str]:
    return [sys.executable, "-m", "stages.train", "unet", "--out", out, "--live", live, "--no-progress"]


def resume_check(project: Path) -> dict[str, Any]:
    """Kill a UNet run in its second epoch, resume it, compare with uninterrupted runs of the same params."""
    for out in ("again", "killed"):
        shutil.rmtree(project / out, ignore_errors=True)
    run(project, *train_command("again", "again.live"))
    killed = subprocess.Popen(
        train_command("killed", "killed.live"),
        cwd=project,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert killed.stderr is not None
    for line in killed.stderr:
        if "epoch 1/" in line:  # epoch 1 is saved; epoch 2 is running (or being saved)
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait()
    _, resumed_log = run(project, *train_command("killed", "killed.live"))
    first = load_checkpoint(project / "models" / "unet" / "last.pt").model
    again, resumed = (load_checkpoint(project / out / "last.pt").model for out in ("again", "killed"))

    def largest_difference(a: dict, b: dict) -> float:
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())

    run_to_run = largest_difference(first, again)
    resumed_vs_first = largest_difference(first, resumed)
    return {
        "resumed": "resuming from" in resumed_log,
        "uninterrupted_runs_identical": run_to_run == 0.0,
        "resumed_identical_to_uninterrupted": resumed_vs_first == 0.0,
        "largest_weight_difference_run_to_run": run_to_run,
        "largest_weight_difference_resumed": resumed_vs_first,
        "resume_exact": resumed_vs_first <= run_to_run,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="the same steps on the CPU at toy size (checks the script)"
    )
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to check")
        return 0
    settings = {**REAL_SIZE, **(SMOKE if args.cpu_smoke else {})}
    n_train = FULL_TRAIN if not args.cpu_smoke else 36
    n_val = FULL_VAL if not args.cpu_smoke else 4
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.cpu_smoke else "cpu (smoke)",
        "torch": torch.__version__,
        "settings": settings,
    }
    with tempfile.TemporaryDirectory(prefix="petseg-gpu-check-") as scratch:
        project = copy_project(Path(scratch) / "petseg")
        set_params(project, settings)
        results["first_repro_s"], _ = run(project, "dvc", "repro", "compare", "plot")
        results["compile_off"] = {m: throughput(project, m, n_train, n_val) for m in MODELS}
        results["resume"] = resume_check(project)
        set_params(project, {"train.compile": True})
        results["compiled_repro_s"], _ = run(project, "dvc", "repro", "compare", "plot")
        results["compile_on"] = {m: throughput(project, m, n_train, n_val) for m in MODELS}
    for model in MODELS:
        best = min(results["compile_off"][model]["epoch_s"], results["compile_on"][model]["epoch_s"])
        eval_s = FULL_TEST / results["compile_off"][model]["eval_images_per_s"]
        results[f"{model}_projected_50_epochs_min"] = round((50 * best + eval_s) / 60, 1)
    results["check_seconds"] = round(time.perf_counter() - started, 1)
    for key, value in results.items():
        print(f"{key}: {json.dumps(value)}")
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
