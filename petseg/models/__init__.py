"""One registry of segmentation models: ``build_model(name, **params)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from petseg.models.parts import SegmentationModel
from petseg.models.resnet34_unet import ResNet34UNet
from petseg.models.unet import UNet

__all__ = ["MODELS", "SegmentationModel", "UNet", "ResNet34UNet", "build_model", "count_parameters"]

MODELS: dict[str, Callable[..., SegmentationModel]] = {
    "unet": UNet,
    "resnet34_unet": ResNet34UNet,
}

# models.<name>.* keys that configure training rather than the architecture
TRAINING_KEYS = frozenset({"batch_size"})


def build_model(name: str, **params: Any) -> SegmentationModel:
    """Build a model by registry name; ``params`` are its architecture options.

    Keys that only configure training (``batch_size``) are ignored, so a whole
    ``models.<name>`` params section can be passed as is.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    arch = {k: v for k, v in params.items() if k not in TRAINING_KEYS}
    try:
        return MODELS[name](**arch)
    except TypeError as exc:
        raise ValueError(f"bad options for model {name!r}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
