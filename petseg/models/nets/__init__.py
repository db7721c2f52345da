"""The networks (plain ``nn.Module``s, one module per architecture) and building them by registry name.

This folder is what the train, evaluate and infer stages depend on in dvc.yaml;
the registry's labels and colours (petseg.models.registry) are not.
Importing the package loads no torch: a model's module loads when it is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from petseg.models.registry import model_info

if TYPE_CHECKING:
    from torch import nn

    from petseg.models.nets.parts import SegmentationModel

# models.<name>.* keys that configure training rather than the architecture
TRAINING_KEYS = frozenset({"batch_size"})


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
