"""The CUDA check for a lent machine: speed, precision, torch.compile, resume and DDP, each phase timed and saved.

    python benchmarks/gpu_check.py --quick              # setup, speed, precision, resume: at most 170 s of phases
    python benchmarks/gpu_check.py                      # all phases: at most 420 s of phases
    python benchmarks/gpu_check.py --skip compile --skip ddp
    python benchmarks/gpu_check.py --cpu-smoke --quick  # the same steps on the CPU at toy size (checks the script)

Without CUDA (and without --cpu-smoke) it says so and exits 0. Its times on a
GPU are the phases' limits, not measurements: it has not yet run on one.

In a temporary copy of the project, with synthetic photos at 256 px
(``setup``: 3680 trainval and 3669 test photos; --quick: 1840 and 600), the
phases are:

- ``speed``: ``dvc repro evaluate``, 2 epochs of each model at the reference
  batch sizes (UNet base 64: 32; ResNet34-UNet: 128), precision auto, compile
  off: train and eval images/s, and the projected 50-epoch time on the full set;
- ``precision``: the UNet in fp32, against what auto chose (and why);
- ``resume``: a UNet run killed in its second epoch and resumed, against two
  uninterrupted runs. ``held`` says which promise held: ``exact`` (identical
  weights, the CPU's promise), ``run-to-run noise`` (no further from the
  uninterrupted run than a second uninterrupted run is: CUDA's promise, with
  cuDNN autotuning and non-deterministic kernels), or ``neither``;
- ``compile``: the UNet with ``train.compile: true`` (full check only);
- ``ddp``: the UNet on two processes (full check only, with 2 or more GPUs;
  on the CPU smoke, two gloo processes).

Each phase runs its commands as child processes under the phase's time limit
(``LIMITS``); one that runs out of time is stopped and recorded as timed out,
and the next phase starts. The results file (default
benchmarks/gpu_results.json) is rewritten as each phase ends, so a check cut
short keeps its finished phases; SIGINT or SIGTERM stops the running phase,
records it as interrupted, and exits. The CPU smoke runs under the same limits
(so --quick stays under 3 minutes); on a busy CPU its speed phase (both models
on the CPU) may run out of time, which the results file then says.
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
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from ruamel.yaml import YAML

from petseg.checkpoint import load_checkpoint
from petseg.data.cache import load_split

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
QUICK_SIZE = {"data.synthetic.n_trainval": 1840, "data.synthetic.n_test": 600}
SMOKE = {
    "data.synthetic.n_trainval": 16,
    "data.synthetic.n_test": 4,
    "data.image_size": 32,
    "train.device": "cpu",
    "models.unet.base_channels": 4,
    "models.unet.batch_size": 4,
    "models.resnet34_unet.batch_size": 7,
    "evaluate.batch_size": 4,
}
MODELS = {"unet": "train_unet", "resnet34_unet": "train_resnet"}
# seconds each phase may take; a phase past its limit is stopped and recorded as timed out
LIMITS = {
    "full": {"setup": 90, "speed": 90, "precision": 45, "resume": 60, "compile": 90, "ddp": 45},
    "quick": {"setup": 40, "speed": 60, "precision": 30, "resume": 40},
}
PHASES = ("speed", "precision", "resume", "compile", "ddp")


class PhaseTimeout(Exception):
    """A child process outlived its phase's limit."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Phase:
    """The running phase's deadline, shared by every child process it starts."""

    def __init__(self, limit: float):
        self.deadline = time.monotonic() + limit

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PhaseTimeout
        return left


def stop(process: subprocess.Popen) -> None:
    """Kill a child and everything it started (it leads its own process group)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def start(project: Path, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run(project: Path, phase: Phase, *command: str) -> tuple[float, str]:
    """Run a child to completion within the phase's time; its seconds and its output."""
    started = time.perf_counter()
    process = start(project, list(command))
    try:
        output, _ = process.communicate(timeout=phase.remaining())
    except subprocess.TimeoutExpired:
        raise PhaseTimeout from None
    finally:
        stop(process)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return time.perf_counter() - started, output


def copy_project(target: Path) -> Path:
    """The project's files (tracked and untracked, not ignored) in a new git repository at ``target``."""
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, names.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "gpu check"]):
        subprocess.run(["git", "-c", "user.email=gpu@check", "-c", "user.name=gpu", *args], cwd=target, check=True)
    return target


def write_params(project: Path, name: str, values: dict[str, Any]) -> str:
    """``params.yaml`` with ``values`` (dotted keys) set, written as ``name`` in the project; returns ``name``."""
    yaml = YAML()
    params = yaml.load(project / "params.yaml")
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    yaml.dump(params, project / name)
    return name


def train(project: Path, phase: Phase, out: str, params: str = "params.yaml") -> tuple[dict[str, Any], str]:
    """Train the UNet into ``out`` (a child process); its throughput and its log."""
    command = [sys.executable, "-m", "stages.train", "unet", "--params", params, "--out", out, "--live", f"{out}.live"]
    _, output = run(project, phase, *command, "--no-progress")
    return throughput(project, Path(out) / "last.pt"), output


def split_sizes(project: Path) -> tuple[int, int]:
    cache = project / "data" / "cache"
    return len(load_split(cache, "train")), len(load_split(cache, "val"))


def throughput(project: Path, last: Path) -> dict[str, Any]:
    """Images/s of a run's last (steady) epoch and its first epoch's extra seconds (warm-up, compilation)."""
    checkpoint = load_checkpoint(project / last)
    seconds = checkpoint.epoch_seconds
    n_train, n_val = split_sizes(project)
    return {
        "train_images_per_s": round((n_train + n_val) / seconds[-1], 1),
        "first_epoch_extra_s": round(seconds[0] - seconds[-1], 1),
        "epoch_s": round(seconds[-1], 2),
        "precision": checkpoint.signature["precision"],
    }


def reasons(output: str) -> list[str]:
    """The training log's "training in ... (why)" lines."""
    return [line.strip() for line in output.splitlines() if ": training in " in line]


def speed_phase(project: Path, phase: Phase, results: dict[str, Any]) -> dict[str, Any]:
    seconds, output = run(project, phase, "dvc", "repro", "evaluate")
    found: dict[str, Any] = {"repro_s": round(seconds, 1), "log": reasons(output)}
    for model in MODELS:
        metrics = json.loads((project / "metrics" / f"{model}.json").read_text())
        found[model] = throughput(project, Path("models") / model / "last.pt")
        found[model]["eval_images_per_s"] = metrics["eval_images_per_s"]
        found[model]["test_dice_after_2_epochs"] = round(metrics["dice_mean"], 4)
        eval_s = FULL_TEST / metrics["eval_images_per_s"]
        per_epoch = found[model]["epoch_s"] * (FULL_TRAIN + FULL_VAL) / sum(split_sizes(project))
        found[model]["projected_50_epochs_min"] = round((50 * per_epoch + eval_s) / 60, 1)
    return found


def precision_phase(project: Path, phase: Phase, results: dict[str, Any]) -> dict[str, Any]:
    fp32, _ = train(project, phase, "fp32", write_params(project, "params-fp32.yaml", {"train.precision": "fp32"}))
    found: dict[str, Any] = {"fp32": fp32}
    auto = results["phases"].get("speed", {}).get("unet")
    if auto:
        found["auto"] = {"precision": auto["precision"], "train_images_per_s": auto["train_images_per_s"]}
        found["auto_over_fp32_speed"] = round(auto["train_images_per_s"] / fp32["train_images_per_s"], 2)
    return found


def largest_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def resume_phase(project: Path, phase: Phase, results: dict[str, Any]) -> dict[str, Any]:
    """Kill a UNet run in its second epoch, resume it, compare with two uninterrupted runs of the same params."""
    first = project / "models" / "unet" / "last.pt"
    if not first.is_file():  # the speed phase was skipped
        train(project, phase, "first")
        first = project / "first" / "last.pt"
    train(project, phase, "again")
    command = [
        sys.executable,
        "-m",
        "stages.train",
        "unet",
        "--out",
        "killed",
        "--live",
        "killed.live",
        "--no-progress",
    ]
    killed = start(project, command)
    watchdog = threading.Timer(phase.remaining(), os.killpg, (killed.pid, signal.SIGKILL))  # a silent hang
    watchdog.start()
    try:
        assert killed.stdout is not None
        for line in killed.stdout:
            if "epoch 1/" in line:  # epoch 1 is saved; epoch 2 is running (or being saved)
                break
    finally:
        watchdog.cancel()
        stop(killed)
    phase.remaining()
    _, resumed_log = run(project, phase, *command)
    reference = load_checkpoint(first).model
    again, resumed = (load_checkpoint(project / out / "last.pt").model for out in ("again", "killed"))
    run_to_run, resumed_vs_first = largest_difference(reference, again), largest_difference(reference, resumed)
    held = "exact" if resumed_vs_first == 0 else "run-to-run noise" if resumed_vs_first <= run_to_run else "neither"
    return {
        "resumed": "resuming from" in resumed_log,
        "held": held,
        "uninterrupted_runs_identical": run_to_run == 0.0,
        "largest_weight_difference_run_to_run": run_to_run,
        "largest_weight_difference_resumed": resumed_vs_first,
    }


def compile_phase(project: Path, phase: Phase, results: dict[str, Any]) -> dict[str, Any]:
    compiled, _ = train(
        project, phase, "compiled", write_params(project, "params-compile.yaml", {"train.compile": True})
    )
    found: dict[str, Any] = {"unet": compiled}
    eager = results["phases"].get("speed", {}).get("unet")
    if eager:
        found["compiled_over_eager_speed"] = round(compiled["train_images_per_s"] / eager["train_images_per_s"], 2)
    return found


def ddp_phase(project: Path, phase: Phase, results: dict[str, Any]) -> dict[str, Any]:
    two, _ = train(project, phase, "ddp", write_params(project, "params-ddp.yaml", {"train.nproc_per_node": 2}))
    return {"unet_2_processes": two}


RUNNERS: dict[str, Callable[[Path, Phase, dict[str, Any]], dict[str, Any]]] = {
    "speed": speed_phase,
    "precision": precision_phase,
    "resume": resume_phase,
    "compile": compile_phase,
    "ddp": ddp_phase,
}


def save(results: dict[str, Any], output: Path) -> None:
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    temporary.replace(output)


def run_phase(name: str, limit: float, work: Callable[[Phase], dict[str, Any]], results: dict, output: Path) -> None:
    """One phase under its limit; its result (or why it has none) is saved at once."""
    started = time.perf_counter()
    record: dict[str, Any] = {"limit_s": limit}
    try:
        record.update(work(Phase(limit)))
        record["status"] = "done"
    except PhaseTimeout:
        record["status"] = f"timed out after {limit} s"
    except Interrupted as exc:
        record["status"] = f"interrupted by {exc}"
        raise
    except Exception as exc:  # a failed phase is a finding; the next phase still runs
        record["status"] = f"failed: {str(exc)[-2000:]}"
    finally:
        record["seconds"] = round(time.perf_counter() - started, 1)
        results["phases"][name] = record
        save(results, output)
        print(f"gpu_check: {name}: {record['status']} ({record['seconds']} s)", flush=True)


def interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="the same steps on the CPU at toy size")
    parser.add_argument("--quick", action="store_true", help="setup, speed, precision and resume on a smaller set")
    parser.add_argument("--skip", action="append", default=[], choices=PHASES, help="leave out a phase (repeatable)")
    parser.add_argument("--output", default=str(RESULTS))
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to check")
        return 0
    mode = "quick" if args.quick else "full"
    limits = LIMITS[mode]
    settings = {**REAL_SIZE, **(QUICK_SIZE if args.quick else {}), **(SMOKE if args.cpu_smoke else {})}
    devices = torch.cuda.device_count() if not args.cpu_smoke else 2  # two gloo processes stand in on the CPU
    skipped = {name: "--skip" for name in args.skip}
    skipped.update({name: "not in --quick" for name in PHASES if name not in LIMITS[mode]})
    if devices < 2:
        skipped.setdefault("ddp", "one GPU")
    output = Path(args.output)
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if not args.cpu_smoke else "cpu (smoke)",
        "torch": torch.__version__,
        "mode": mode,
        "settings": settings,
        "phases": {name: {"status": f"skipped ({why})"} for name, why in skipped.items()},
    }
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="petseg-gpu-check-") as scratch:
            project = Path(scratch) / "petseg"

            def setup(phase: Phase) -> dict[str, Any]:
                copy_project(project)
                write_params(project, "params.yaml", settings)
                seconds, _ = run(project, phase, "dvc", "repro", "preprocess")
                return {"repro_s": round(seconds, 1)}

            run_phase("setup", limits["setup"], setup, results, output)
            if results["phases"]["setup"]["status"] == "done":
                for name in PHASES:
                    if name not in skipped:
                        work = RUNNERS[name]
                        run_phase(name, limits[name], lambda p, w=work: w(project, p, results), results, output)
    except Interrupted as exc:
        results["interrupted"] = str(exc)
        save(results, output)
        print(f"gpu_check: interrupted by {exc}; finished phases are in {output}", file=sys.stderr)
        return 128 + exc.signum
    results["check_seconds"] = round(time.perf_counter() - started, 1)
    save(results, output)
    print(json.dumps(results["phases"], indent=2))
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
