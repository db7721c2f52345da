"""Pet probabilities from a checkpoint, the one predict path of evaluation and inference.

Prediction runs batched under ``torch.inference_mode`` in plain float32 (no
autocast, no TF32, deterministic cuDNN), so its numbers reproduce exactly from
the checkpoint and the pixels, whatever trained the model. A pixel is pet when
its probability sigmoid(logit) exceeds the threshold. With flip test-time
augmentation (``tta``) the probability map is the average of the maps of the
image and of its horizontal flip (flipped back), thresholded afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from petseg.checkpoint import load_model
from petseg.data.imaging import as_model_input
from petseg.device import resolve_device

CHANNELS_LAST = ("cpu", "cuda")  # where channels_last is fast (and right); MPS gets contiguous tensors


class Predictor:
    """A checkpoint's model ready to predict on one device: eval mode, channels_last where that is fast."""

    def __init__(self, checkpoint_path: str | Path, device: str | torch.device = "auto", *, tta: bool = False):
        self.device = device if isinstance(device, torch.device) else resolve_device(device, param="--device")
        self.model, self.checkpoint = load_model(checkpoint_path, self.device)
        if self.device.type in CHANNELS_LAST:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.path = Path(checkpoint_path)
        self.tta = tta

    @property
    def image_size(self) -> int:
        return self.checkpoint.image_size

    def probabilities(self, pixels: np.ndarray) -> torch.Tensor:
        """Pet probabilities (float32 N x 1 x H x W, on the device) for uint8 N x H x W x 3 pixels."""
        images = model_input(pixels, self.device)
        with exact_float32(self.device):
            return probabilities(self.model, images, tta=self.tta)

    def batches(self, pixels: np.ndarray, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(first index, probabilities) for consecutive batches of an N x H x W x 3 array (memmaps welcome)."""
        for start in range(0, len(pixels), batch_size):
            yield start, self.probabilities(pixels[start : start + batch_size])


def model_input(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W x 3 pixels as the model's input on ``device``: channels_last on CPU and CUDA, else contiguous.

    MPS has computed wrong convolutions on channels_last-strided input (pytorch#180984).
    """
    images = as_model_input(torch.from_numpy(np.array(pixels, dtype=np.uint8)).to(device))
    return images if device.type in CHANNELS_LAST else images.contiguous()


@torch.inference_mode()
def probabilities(model: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Pet probabilities (float32 N x 1 x H x W) for float images in [0, 1]; ``tta``: the module docstring."""
    prob = torch.sigmoid(model(images).float())
    if tta:
        prob = (prob + torch.sigmoid(model(images.flip(-1)).float()).flip(-1)) / 2
    return prob


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Plain, deterministic float32 on CUDA for the duration (no TF32, no autotuned kernels)."""
    if device.type != "cuda":
        yield
        return
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic,
        ) = saved
