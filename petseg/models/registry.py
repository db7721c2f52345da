"""The one registry of segmentation models: everything the pipeline knows per model.

Each :class:`ModelInfo` names the model (its params section ``models.<name>``
and its folders ``models/<name>/``, ``dvclive/<name>/``), the label people
read, the colour and marker of its charts, the class that implements it, the
dataclass of its params section and the dvc.yaml stage that trains it. Every
stage, chart, template and test iterates over :data:`MODELS`, in this order;
the first model is the one the others are compared with.

It imports nothing (no torch): the params schema and the light stages read it.
Networks are built by :mod:`petseg.models.nets`. This file is not a dependency
of the train, evaluate or infer stages in dvc.yaml (it holds names and looks,
like petseg.paths), so a new colour re-runs only the plot stage.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from petseg.models.nets.parts import SegmentationModel


@dataclass(frozen=True)
class ModelInfo:
    """One model of the pipeline."""

    name: str  # params section models.<name>, folders models/<name>/, dvclive/<name>/, metrics/<name>.json
    label: str  # for people: logs, tables, chart legends
    colour: str  # "#rrggbb", in every chart (matplotlib and the DVC templates)
    marker: str  # matplotlib marker of its curves
    module: str  # the module holding the class (under petseg.models.nets)
    class_name: str
    section: str  # the dataclass of its params section in petseg.params
    train_stage: str  # the dvc.yaml stage that writes models/<name>/best.pt: python -m stages.train <name>

    def load_class(self) -> type[SegmentationModel]:
        """The model's class (importing its module, and torch, on first use)."""
        return getattr(importlib.import_module(self.module), self.class_name)


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("unet", "UNet", "#1f77b4", "o", "petseg.models.nets.unet", "UNet", "UNetParams", "train_unet"),
        ModelInfo(
            "resnet34_unet",
            "ResNet34-UNet",
            "#d62728",
            "s",
            "petseg.models.nets.resnet34_unet",
            "ResNet34UNet",
            "ResNet34UNetParams",
            "train_resnet",
        ),
    )
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def model_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def label(name: str) -> str:
    """The model's name for people (``ResNet34-UNet``); unknown names are shown as they are."""
    return MODELS[name].label if name in MODELS else name
