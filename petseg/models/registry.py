"""The one registry of segmentation models: names, labels, classes and the stages that train them.

It imports no torch: the params schema and the light stages read model names
from here. A model class is imported only when one is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from petseg.models.parts import SegmentationModel


@dataclass(frozen=True)
class ModelInfo:
    """One model: its name is its params section (``models.<name>``) and its folders (``models/<name>/``)."""

    name: str
    label: str  # for people: logs, tables, chart legends
    module: str  # the module holding the class
    class_name: str
    train_stage: str  # the dvc.yaml stage that writes models/<name>/best.pt

    def load_class(self) -> type[SegmentationModel]:
        """The model's class (importing its module, and torch, on first use)."""
        return getattr(importlib.import_module(self.module), self.class_name)


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("unet", "UNet", "petseg.models.unet", "UNet", "train_unet"),
        ModelInfo("resnet34_unet", "ResNet34-UNet", "petseg.models.resnet34_unet", "ResNet34UNet", "train_resnet"),
    )
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)

# models.<name>.* keys that configure training rather than the architecture
TRAINING_KEYS = frozenset({"batch_size"})


def model_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def label(name: str) -> str:
    """The model's name for people (``ResNet34-UNet``); unknown names are shown as they are."""
    return MODELS[name].label if name in MODELS else name


def architecture(params: dict[str, Any]) -> dict[str, Any]:
    """The architecture options of a ``models.<name>`` section (training keys dropped)."""
    return {key: value for key, value in params.items() if key not in TRAINING_KEYS}


def build_model(name: str, **params: Any) -> SegmentationModel:
    """Build a model by registry name; ``params`` are its architecture options.

    Keys that only configure training (``batch_size``) are ignored, so a whole
    ``models.<name>`` params section can be passed as is.
    """
    cls = model_info(name).load_class()
    try:
        return cls(**architecture(params))
    except TypeError as exc:
        raise ValueError(f"bad options for model {name!r}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
