"""What every device needs, proved on the CPU: no float64 on the device, one batch order, precision, OOM in one line."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import petseg.device
import petseg.precision
from petseg.checkpoint import load_checkpoint
from petseg.data.cache import load_split
from petseg.device import compile_auto
from petseg.distributed import DistContext
from petseg.errors import ParamsError
from petseg.evaluation import evaluate_models
from petseg.evaluation.scoring import evaluate_checkpoint
from petseg.losses import get_loss
from petseg.memory import OutOfDeviceMemory
from petseg.models import build_model
from petseg.precision import resolve_precision
from petseg.predict import model_input
from petseg.training import fit
from petseg.training.batches import SplitTensors, epoch_batches
from petseg.training.loops import train_one_epoch
from tests.cachemaker import write_cache
from tests.paramsfile import REPO, augmentation, evaluate_params, train_params, unet

CPU = torch.device("cpu")
UNET = unet(base_channels=4, batch_size=8)
AUGMENT = augmentation(hflip=0.5, vflip=0.2, brightness=0.2, contrast=0.2, saturation=0.2)


class Float64OnDevice(TorchDispatchMode):
    """Fails on any operator that returns a float64 tensor on ``device``'s type (MPS has no float64)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in tree_flatten(result)[0]:
            if (
                isinstance(value, torch.Tensor)
                and value.dtype == torch.float64
                and value.device.type == self.device.type
            ):
                raise AssertionError(f"{func} made a float64 tensor on {value.device}")
        return result


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("cache"), {"train": 16, "val": 8, "test": 8}, image_size=32)


def config(**overrides):
    values = dict(epochs=1, lr=3e-3, seed=7, augment=AUGMENT, device="cpu")
    return train_params(**{**values, **overrides})


def test_the_float64_guard_fails_on_float64_made_on_the_device_only():
    with pytest.raises(AssertionError, match="float64 tensor on cpu"), Float64OnDevice(CPU):
        torch.zeros((), dtype=torch.float64)
    with pytest.raises(AssertionError, match="_to_copy"), Float64OnDevice(CPU):
        torch.ones(3).double()  # how the running sums were kept
    with Float64OnDevice(CPU):
        torch.zeros(3, dtype=torch.float64, device="meta")  # another device: not this guard's concern
        torch.ones(3, dtype=torch.int64).sum()


def test_training_validation_and_evaluation_make_no_float64_on_the_device(cache: Path, tmp_path: Path):
    with Float64OnDevice(CPU):
        result = fit("unet", UNET, config(), cache, tmp_path / "m", progress=False)
        evaluation = evaluate_checkpoint(
            tmp_path / "m" / "best.pt", load_split(cache, "test"), evaluate_params(tta=True), CPU
        )
    assert result.epochs_run == 1 and 0 <= evaluation.summary["dice_mean"] <= 1
    assert evaluation.table.scores["dice"].dtype == np.float64  # exact scores, computed on the host


def test_uploaded_and_memory_mapped_splits_give_the_same_batches_and_weights(cache: Path):
    split = load_split(cache, "train")
    mapped = SplitTensors(split, CPU)
    uploaded = SplitTensors(split, CPU)  # as on a GPU with room for the split
    uploaded.images = torch.from_numpy(np.array(split.images))
    uploaded.masks = torch.from_numpy(np.array(split.masks))
    batches = epoch_batches(len(split), 8, seed=0, epoch=0)
    assert any((np.diff(batch) < 0).any() for batch in batches)  # shuffled: sorted reads must be undone
    for batch in batches:
        for a, b in zip(mapped.batch(batch), uploaded.batch(batch)):
            assert torch.equal(a, b)
    weights = []
    for data in (mapped, uploaded):
        torch.manual_seed(0)
        model = build_model("unet", base_channels=4).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(1)  # positional augmentation draws
        train_one_epoch(model, data, batches, optimizer, get_loss("bce+dice"), augment=AUGMENT, generator=generator)
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def native(answer: bool):
    return lambda: (
        answer,
        "the CPU has AVX-512 BF16 (probe replaced)" if answer else "no native bf16 (probe replaced)",
    )


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_picks_bf16_only_where_it_is_native(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(petseg.precision, "cpu_native_bf16", native(has_bf16))
    chosen = resolve_precision("auto", CPU)
    assert chosen.name == expected and chosen.reason.startswith("auto: ") and "probe replaced" in chosen.reason
    assert chosen.reason.endswith(f"so {expected}" + ("" if has_bf16 else " (emulated bf16 is slower)"))


def test_a_run_never_continues_in_another_precision(cache: Path, tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(petseg.precision, "cpu_native_bf16", native(False))
    with caplog.at_level(logging.INFO, logger="petseg"):
        fit("unet", UNET, config(precision="auto"), cache, tmp_path / "m", progress=False)
    assert "training in fp32 (auto: no native bf16 (probe replaced), so fp32" in caplog.text
    assert f"not compiled ({compile_auto('cpu', petseg.device.cpu_capability(), 'fp32')[1]})" in caplog.text
    caplog.clear()
    monkeypatch.setattr(petseg.precision, "cpu_native_bf16", native(True))  # the same run on a bf16 machine
    with caplog.at_level(logging.INFO, logger="petseg"):
        result = fit("unet", UNET, config(precision="auto"), cache, tmp_path / "m", progress=False)
    assert result.epochs_run == 1 and "starting over" in caplog.text and "precision: 'fp32' -> 'bf16'" in caplog.text
    assert load_checkpoint(tmp_path / "m" / "last.pt").signature["precision"] == "bf16"


@pytest.mark.parametrize(
    "device, capability, precision, says",
    [
        ("cpu", "AVX2", "fp32", "measured 0.90x eager on a CPU with AVX2 in fp32: benchmarks/results.json)"),
        ("cpu", "AMX", "bf16", "measured 1.21x eager once compiled on a CPU with AMX in bf16, benchmarks/"),
        ("cpu", "AMX", "fp32", "not measured on a CPU with AMX in fp32)"),
        ("cpu", "AVX512", "bf16", "not measured on a CPU with AVX512 in bf16)"),
        ("cpu", "AVX512", "fp32", "not measured on a CPU with AVX512 in fp32)"),
        ("cuda", "", "bf16", "not measured on cuda in bf16)"),
        ("mps", "", "fp32", "not measured on mps in fp32)"),
    ],
)
def test_compile_auto_says_what_was_measured_on_each_kind_of_device(device, capability, precision, says):
    compiled, reason = compile_auto(device, capability, precision)
    assert not compiled and reason.startswith("auto: off (torch.compile ") and says in reason
    assert petseg.device.resolve_compile(True, torch.device(device), precision) == (True, "train.compile: true")
    assert petseg.device.resolve_compile(False, torch.device(device), precision) == (False, "train.compile: false")


def test_compile_figures_are_those_of_their_result_files():
    for (device, capability, precision), (ratio, source) in petseg.device.COMPILE_MEASURED.items():
        results = json.loads((REPO / source).read_text())
        machine = results.get("machine") or results["_machine"]
        figures = results.get("speed", results)
        assert round(figures["compile_speedup_ratio"], 2) == ratio, source
        assert machine.get("device", "cpu") == device and capability.lower() in json.dumps(machine).lower(), source
        # the precision auto picked there: bf16 exactly where the CPU has it natively
        assert (precision == "bf16") == ("no native bf16" not in json.dumps(machine)), source


def test_the_cpu_capability_is_amx_where_torch_finds_amx_tiles(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert petseg.device.cpu_capability() == "AMX"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert petseg.device.cpu_capability() == torch.backends.cpu.get_cpu_capability()


def test_mps_refuses_fp16_and_old_torch_bf16_and_auto_stays_fp32(monkeypatch):
    mps = torch.device("mps")
    with pytest.raises(ParamsError, match=r"^train\.precision = 'fp16' is not available on Apple MPS"):
        resolve_precision("fp16", mps)
    monkeypatch.setattr(petseg.precision, "torch_release", lambda: (2, 5))
    with pytest.raises(ParamsError, match=r"^train\.precision = 'bf16' on Apple MPS needs torch 2\.6"):
        resolve_precision("bf16", mps)
    monkeypatch.setattr(petseg.precision, "torch_release", lambda: (2, 6))
    assert resolve_precision("bf16", mps).name == "bf16"
    assert resolve_precision("auto", mps).name == "fp32"


def test_cuda_bf16_is_asked_of_the_device_used(monkeypatch):
    asked = []
    monkeypatch.setattr(petseg.precision, "cuda_native_bf16", lambda device: asked.append(device) or device.index == 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU {device.index}")
    assert resolve_precision("auto", torch.device("cuda", 1)).name == "bf16"
    assert resolve_precision("auto", torch.device("cuda", 0)).name == "fp16"
    with pytest.raises(ParamsError, match=r"^train\.precision = 'bf16' but GPU 0 has no native bf16"):
        resolve_precision("bf16", torch.device("cuda", 0))
    assert asked == [torch.device("cuda", 1), torch.device("cuda", 0), torch.device("cuda", 0)]


def test_torch_release_reads_this_torch():
    major, minor = petseg.precision.torch_release()
    assert torch.__version__.startswith(f"{major}.{minor}.") and (major, minor) >= (2, 6)


def test_out_of_memory_in_training_names_the_batch_size_param(cache: Path, tmp_path: Path, monkeypatch):
    def step(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("petseg.training.loops.training_step", step)
    with pytest.raises(OutOfDeviceMemory) as raised:
        fit("unet", UNET, config(), cache, tmp_path / "m", progress=False)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("unet at batch size 8 on 32x32 images ran out of memory on cpu (")
    assert "GiB of RAM" in message and message.endswith("; lower models.unet.batch_size")
    assert not (tmp_path / "m" / "last.pt").exists()


def test_out_of_memory_in_evaluation_names_evaluate_batch_size(cache: Path, tmp_path: Path, monkeypatch):
    fit("unet", UNET, config(), cache, tmp_path / "models" / "unet", progress=False)
    where = dict(cache_dir=cache, models_dir=tmp_path / "models", metrics_dir=tmp_path / "metrics")
    where["plots_dir"] = tmp_path / "plots"

    def failing(message):
        def probabilities(*args, **kwargs):
            raise RuntimeError(message)

        return probabilities

    monkeypatch.setattr("petseg.predict.probabilities", failing("MPS backend out of memory (MPS allocated: 1 GB)"))
    with pytest.raises(OutOfDeviceMemory, match=r"^unet at batch size 4 on 32x32 .*; lower evaluate\.batch_size$"):
        evaluate_models(["unet"], evaluate_params(batch_size=4), **where, device="cpu")
    monkeypatch.setattr("petseg.predict.probabilities", failing("some other failure"))
    with pytest.raises(RuntimeError, match="^some other failure$"):  # anything else passes through unchanged
        evaluate_models(["unet"], evaluate_params(batch_size=4), **where, device="cpu")
    assert not (tmp_path / "metrics").exists()


def test_the_global_batch_must_split_over_the_processes_torchrun_started():
    with pytest.raises(ParamsError, match=r"^models\.unet\.batch_size = 16 .* divisible by the 3 processes torchrun"):
        DistContext(rank=0, world_size=3).global_batch(16, "models.unet.batch_size")
    assert DistContext(rank=1, world_size=4).global_batch(16, "models.unet.batch_size") == 16


def test_prediction_input_is_channels_last_on_cpu_and_contiguous_elsewhere():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    on_cpu = model_input(pixels, CPU)
    assert on_cpu.is_contiguous(memory_format=torch.channels_last) and not on_cpu.is_contiguous()
    assert model_input(pixels, torch.device("meta")).is_contiguous()  # MPS and any other device


@pytest.mark.slow
def test_gpu_check_smoke_keeps_its_finished_phases_when_interrupted(tmp_path: Path):
    output = tmp_path / "gpu.json"
    command = [sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--quick", "--skip", "speed"]
    command += ["--output", str(output)]
    check = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE)
    try:
        assert check.stdout is not None
        for line in check.stdout:  # interrupt once a phase after the setup has finished
            if line.startswith(b"gpu_check: precision: "):
                check.send_signal(signal.SIGTERM)
                break
        assert check.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        check.kill()
    results = json.loads(output.read_text())
    phases = results["phases"]
    assert phases["setup"]["status"] == phases["precision"]["status"] == "done", phases
    assert phases["precision"]["fp32"]["train_images_per_s"] > 0 and phases["speed"]["status"] == "skipped (--skip)"
    assert results["interrupted"] == "SIGTERM" and phases["compile"]["status"] == "skipped (not in --quick)"
    assert phases.get("resume", {"status": "interrupted by SIGTERM"})["status"] == "interrupted by SIGTERM"
