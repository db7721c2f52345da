"""Mixed precision for training: which format the forward pass computes in, chosen per device (``train.precision``).

``auto`` picks, and the training log says which and why:

- CUDA: bf16 where the GPU used computes it natively (Ampere and newer), else
  fp16 with a gradient scaler (T4, V100: fp16's narrow exponent needs loss
  scaling; bf16 has fp32's range and needs none);
- CPU: bf16 where the CPU computes it natively (AVX-512 BF16 or AMX on x86, the
  BF16 extension on Arm), fp32 elsewhere (emulated bf16 is an order of
  magnitude slower). What this rests on, bf16's training speed against fp32
  on a CPU with native bf16 and on one without and its test Dice, is in
  benchmarks/RESULTS.md ("Precision: bf16 vs fp32"), from
  benchmarks/measurements/xeon-amx.json and benchmarks/results.json;
- Apple MPS: fp32 (mixed precision not measured there).

Refused in one line: bf16 on a CUDA GPU without it, fp16 on MPS (its gradient
scaler needs float64, which MPS lacks), bf16 on MPS below torch 2.6 (MPS
autocast has no bf16 before it).

Only training uses it: evaluation and inference always run in exact fp32
(petseg.predict), so metrics compare whatever trained the model. The resolved
precision is part of a run's signature: a checkpoint is continued only under
the same one.
"""

from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from petseg.errors import ParamsError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MPS_BF16_TORCH = (2, 6)  # the first torch whose MPS autocast computes bf16


@dataclass(frozen=True)
class Precision:
    """The resolved precision of a run on one device, and why it was chosen."""

    name: str  # fp32 | bf16 | fp16
    device_type: str
    reason: str

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass runs in (a no-op for fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=DTYPES[self.name])

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling so that small gradients do not underflow; the others need none."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and what says so."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        for probe, what in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX-512 BF16")):
            check = getattr(torch.cpu, probe, None)  # torch's own probes of the CPU (private, present since 2.1)
            if check is not None and check():
                return True, f"the CPU has {what} (torch.cpu.{probe})"
        flags = _cpu_flags()
        if flags & {"avx512_bf16", "amx_bf16"}:
            return True, "the CPU has native bf16 (/proc/cpuinfo)"
        return False, f"the CPU has no native bf16 (torch's CPU capability: {torch.backends.cpu.get_cpu_capability()})"
    if machine in ("aarch64", "arm64"):
        if "bf16" in _cpu_flags():
            return True, "the Arm CPU has the BF16 extension (/proc/cpuinfo)"
        return False, "no BF16 extension found on this Arm CPU"
    return False, f"native bf16 is not known on {machine or 'this'} CPUs"


def torch_release() -> tuple[int, int]:
    """This torch's (major, minor) version."""
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def cuda_native_bf16(device: torch.device) -> bool:
    """Whether the CUDA device used (not merely the current one) computes bf16 natively."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def _refuse_on_mps(requested: str) -> None:
    if requested == "fp16":
        raise ParamsError(
            "train.precision = 'fp16' is not available on Apple MPS (its gradient scaler needs float64, which MPS "
            "lacks); use auto, fp32 or bf16"
        )
    if torch_release() < MPS_BF16_TORCH:
        raise ParamsError(
            f"train.precision = 'bf16' on Apple MPS needs torch 2.6 or newer (this is torch {torch.__version__}); "
            "use fp32 or upgrade torch"
        )


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision for ``train.precision`` on ``device``; an explicit one the device cannot run is a ParamsError."""
    kind = device.type
    if requested == "fp32":
        return Precision("fp32", kind, "train.precision: fp32")
    if requested in DTYPES:
        if kind == "cuda" and requested == "bf16" and not cuda_native_bf16(device):
            raise ParamsError(
                f"train.precision = 'bf16' but {torch.cuda.get_device_name(device)} has no native bf16; "
                "use auto (fp16 with a gradient scaler) or fp32"
            )
        if kind == "mps":
            _refuse_on_mps(requested)
        if kind not in ("cuda", "cpu", "mps"):
            raise ParamsError(f"train.precision = {requested!r} is not available on {kind}; use auto or fp32")
        return Precision(requested, kind, f"train.precision: {requested}")
    if kind == "cuda":
        name = torch.cuda.get_device_name(device)
        if cuda_native_bf16(device):
            return Precision("bf16", kind, f"auto: {name} computes bf16 natively")
        return Precision("fp16", kind, f"auto: {name} has no native bf16, so fp16 with a gradient scaler")
    if kind == "cpu":
        native, why = cpu_native_bf16()
        if native:
            return Precision("bf16", kind, f"auto: {why}, so bf16")
        return Precision("fp32", kind, f"auto: {why}, so fp32 (emulated bf16 is slower)")
    return Precision("fp32", kind, f"auto: fp32 on {kind} (mixed precision not measured there)")
