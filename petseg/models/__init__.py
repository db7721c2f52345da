"""Segmentation models built by name: ``build_model(name, **params)`` (petseg.models.registry, petseg.models.nets).

Importing this package is cheap (no torch); the model classes load on first use.
"""

from __future__ import annotations

from typing import Any

from petseg.models.nets import TRAINING_KEYS, architecture, build_model, count_parameters
from petseg.models.registry import MODEL_NAMES, MODELS, ModelInfo, label, model_info

__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "TRAINING_KEYS",
    "ModelInfo",
    "ResNet34UNet",
    "SegmentationModel",
    "UNet",
    "architecture",
    "build_model",
    "count_parameters",
    "label",
    "model_info",
]

_LAZY = {
    "UNet": "petseg.models.nets.unet",
    "ResNet34UNet": "petseg.models.nets.resnet34_unet",
    "SegmentationModel": "petseg.models.nets.parts",
}


def __getattr__(name: str) -> Any:  # the module's lazy exports (PEP 562): Python calls it, no code does
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'petseg.models' has no attribute {name!r}")
