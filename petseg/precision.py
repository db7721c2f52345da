"""Mixed precision for training: which format the forward pass computes in, chosen per device (``train.precision``).

``auto`` picks, and the training log says which and why:

- CUDA: bf16 where the GPU computes it natively (Ampere and newer), else fp16
  with a gradient scaler (T4, V100: fp16's narrow exponent needs loss scaling;
  bf16 has fp32's range and needs none);
- CPU: fp32. bf16 is much faster where the CPU has native bf16 instructions
  (AVX-512 BF16 or AMX on x86, the BF16 extension on Arm; emulated, it is an order
  of magnitude slower), but ``auto`` picks it only once its quality check on real
  photos passes (benchmarks/RESULTS.md, "Precision"), which has not been run on
  such a CPU yet; ``train.precision: bf16`` uses it meanwhile, and the log says
  whether this CPU has it natively;
- anything else (Apple MPS): fp32.

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


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision for ``train.precision`` on ``device``; an explicit one the device cannot run is a ParamsError."""
    kind = device.type
    if requested == "fp32":
        return Precision("fp32", kind, "train.precision: fp32")
    if requested in DTYPES:
        if kind == "cuda" and requested == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ParamsError(
                f"train.precision = 'bf16' but {torch.cuda.get_device_name(device)} has no native bf16; "
                "use auto (fp16 with a gradient scaler) or fp32"
            )
        if kind not in ("cuda", "cpu", "mps"):
            raise ParamsError(f"train.precision = {requested!r} is not available on {kind}; use auto or fp32")
        return Precision(requested, kind, f"train.precision: {requested}")
    if kind == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision("bf16", kind, f"auto: {torch.cuda.get_device_name(device)} computes bf16 natively")
        return Precision(
            "fp16",
            kind,
            f"auto: {torch.cuda.get_device_name(device)} has no native bf16, so fp16 with a gradient scaler",
        )
    if kind == "cpu":
        native, why = cpu_native_bf16()
        if native:  # see the module's docstring: fast, but its quality on real photos is not yet checked
            why += "; fp32 until bf16's quality check passes (set train.precision: bf16 to use it)"
        return Precision("fp32", kind, f"auto: {why}")
    return Precision("fp32", kind, f"auto: fp32 on {kind} (mixed precision not measured faster there)")
