"""Choosing the compute device and setting it up for speed."""

from __future__ import annotations

import torch

from petseg.errors import ParamsError


def resolve_device(name: str = "auto", *, param: str = "train.device") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamsError(f"{param} = {name!r} but CUDA is not available on this machine; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ParamsError(f"{param} = {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParamsError(f"{param} = {name!r} but Apple MPS is not available on this machine; use auto or cpu")
    return device


def configure_device(device: torch.device) -> None:
    """Backend switches that make the device fast: TF32 and cuDNN autotuning on CUDA, a steady heap on CPU.

    cuDNN's autotuning (and its non-deterministic kernels) is why a resumed CUDA run matches an uninterrupted
    one only to run-to-run noise (docs/devices.md); on the CPU a resumed run is exact.
    """
    if device.type == "cpu":
        tune_cpu_allocator()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


# torch.compile over eager in training epochs once compiled (benchmarks/speed.py's compile_speedup_ratio), by
# (device kind, CPU capability, the precision that auto picks there); tests/test_devices.py checks each figure
# against its result file
COMPILE_MEASURED: dict[tuple[str, str, str], tuple[float, str]] = {
    ("cpu", "AVX2", "fp32"): (0.90, "benchmarks/results.json"),
    ("cpu", "AMX", "bf16"): (1.21, "benchmarks/measurements/xeon-amx.json"),
}


def cpu_capability() -> str:
    """``AMX`` where torch finds AMX tiles, else torch's CPU capability (``AVX512``, ``AVX2``, ``DEFAULT``, ...)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch's own probe (private, present since 2.1)
    if probe is not None and probe():
        return "AMX"
    return torch.backends.cpu.get_cpu_capability()


def compile_auto(device_type: str, capability: str, precision: str) -> tuple[bool, str]:
    """What ``train.compile: auto`` does on a device kind (a CPU of ``capability``) training in ``precision``.

    Off everywhere; the reason names what was measured there (COMPILE_MEASURED, each figure with its result
    file). Where torch.compile was measured slower than eager once compiled, that is the reason. Where it was
    measured faster once compiled, the compilation itself is the reason: every training process pays it again
    (each resume, each DDP rank), and no measurement shows a run's epochs repaying it; ``train.compile: true``
    turns it on for long runs. Elsewhere (other CPUs and precisions, CUDA, MPS) it was not measured.
    """
    where = f"a CPU with {capability} in {precision}" if device_type == "cpu" else f"{device_type} in {precision}"
    measured = COMPILE_MEASURED.get((device_type, capability if device_type == "cpu" else "", precision))
    if measured is None:
        return False, f"auto: off (torch.compile not measured on {where})"
    ratio, source = measured
    if ratio <= 1:
        return False, f"auto: off (torch.compile measured {ratio:.2f}x eager on {where}: {source})"
    return False, (
        f"auto: off (torch.compile measured {ratio:.2f}x eager once compiled on {where}, {source}, but not measured "
        "to repay its compile time in a run; train.compile: true for long runs)"
    )


def resolve_compile(setting: bool | str, device: torch.device, precision: str) -> tuple[bool, str]:
    """Whether to torch.compile the model (``train.compile``) on ``device`` training in ``precision``, and why."""
    if setting != "auto":
        return bool(setting), f"train.compile: {str(setting).lower()}"
    return compile_auto(device.type, cpu_capability() if device.type == "cpu" else "", precision)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (for timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS after every step.

    PyTorch on CPU allocates and frees the same large activation buffers every
    training step; glibc's defaults hand them back to the kernel (mmap/munmap,
    heap trimming) and fault them in again, zero-filled, on the next step. Raising
    the mmap and trim thresholds removes that churn (measured by
    benchmarks/bench_train.py). A no-op where glibc's mallopt is not available.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = (
        bool(mallopt(m_mmap_threshold, 1 << 30))
        & bool(mallopt(m_trim_threshold, 1 << 31))
        & bool(mallopt(m_top_pad, 1 << 28))
    )
    _ALLOCATOR_TUNED = ok
    return ok
