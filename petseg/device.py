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


def resolve_compile(setting: bool | str, device: torch.device) -> tuple[bool, str]:
    """Whether to torch.compile the model (``train.compile``), and why.

    ``auto`` is off on every device: torch.compile measured slower than eager on the CPU (benchmarks/speed.py,
    benchmarks/RESULTS.md) and has not been measured on CUDA or MPS (benchmarks/gpu_check.py measures CUDA).
    """
    if setting != "auto":
        return bool(setting), f"train.compile: {str(setting).lower()}"
    measured = "measured slower than eager" if device.type == "cpu" else "not measured faster"
    return False, f"auto: off (torch.compile {measured} on {device.type})"


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
