"""Out of device memory, explained: the model, the batch, the device's memory and the param to lower, in one line.

CUDA raises ``torch.OutOfMemoryError``; Apple's MPS raises a ``RuntimeError``
whose message starts "MPS backend out of memory". Either becomes an
:class:`OutOfDeviceMemory` (a PetsegError: one line, no traceback).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from petseg.errors import PetsegError

MPS_OUT_OF_MEMORY = "MPS backend out of memory"


class OutOfDeviceMemory(PetsegError):
    """A batch did not fit in the device's memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is CUDA's or MPS's out-of-memory error."""
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and MPS_OUT_OF_MEMORY in str(exc))


def device_memory(device: torch.device) -> str:
    """The device's name and total memory, e.g. "cuda:0 (NVIDIA T4, 14.6 GiB)"."""
    gib = 1024**3
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"{device} ({properties.name}, {properties.total_memory / gib:.1f} GiB)"
    if device.type == "mps":
        return f"mps ({torch.mps.recommended_max_memory() / gib:.1f} GiB recommended for the GPU)"
    if device.type == "cpu" and hasattr(os, "sysconf"):
        return f"cpu ({os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / gib:.1f} GiB of RAM)"
    return str(device)


@contextlib.contextmanager
def out_of_memory_explained(
    device: torch.device, model_name: str, batch_size: int, image_size: int, param: str
) -> Iterator[None]:
    """Turn an out-of-memory error in the block into one line naming ``param`` (the batch size to lower)."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise OutOfDeviceMemory(
            f"{model_name} at batch size {batch_size} on {image_size}x{image_size} images ran out of memory on "
            f"{device_memory(device)}; lower {param}"
        ) from None
