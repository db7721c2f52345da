"""Params for tests: the repository's params.yaml with dotted overrides, as a file or as typed sections."""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from petseg.params import AugmentParams, EvaluateParams, TrainParams, validate

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = get_args(get_type_hints(TrainParams)["precision"])  # train.precision's values
PRECISION_SWITCH = "PETSEG_TEST_PRECISION"  # tests/conftest.py checks its value and reports it


def forced_precision() -> str | None:
    """The ``train.precision`` that ``PETSEG_TEST_PRECISION`` puts in the params tests write, or None (unset)."""
    return os.environ.get(PRECISION_SWITCH) or None


def with_test_precision(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the switch's ``train.precision`` (in place), where it is set."""
    forced = forced_precision()
    if forced is not None:
        params["train"]["precision"] = forced
    return params


def default_params() -> dict[str, Any]:
    """The repository's params.yaml, as every test starts from: ``train.precision`` as the switch sets it."""
    return with_test_precision(yaml.safe_load((REPO / "params.yaml").read_text()))


def with_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with ``{"train.lr": 0.1, ...}`` applied."""
    params = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    return params


def write_params(path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Write the repository's params.yaml, with ``overrides``, to ``path``."""
    path.write_text(yaml.safe_dump(with_overrides(default_params(), overrides or {}), sort_keys=False))
    return path


def section(dotted: str, **overrides: Any) -> Any:
    """A typed params section (``"train"``, ``"models.unet"``, ...) of the repository's params, with overrides."""
    params = validate(default_params())
    for key in dotted.split("."):
        params = getattr(params, key)
    values = {
        key: (dataclasses.replace(getattr(params, key), **value) if isinstance(value, dict) else value)
        for key, value in overrides.items()
    }
    return dataclasses.replace(params, **values)


def train_params(**overrides: Any) -> TrainParams:
    """``train.*`` of the repository's params with overrides; ``augment`` may be a dict of its keys."""
    return section("train", **overrides)


def augment_params(**overrides: float) -> AugmentParams:
    return section("train.augment", **overrides)


def evaluate_params(**overrides: Any) -> EvaluateParams:
    return section("evaluate", **overrides)


def unet(**overrides: Any) -> Any:
    return section("models.unet", **overrides)


def resnet(**overrides: Any) -> Any:
    return section("models.resnet34_unet", **overrides)


def augmentation(**overrides: float) -> AugmentParams:
    """Augmentation params: horizontal flips with probability 0.5 and nothing else, unless overridden."""
    return AugmentParams(
        **{
            "hflip": 0.5,
            "vflip": 0.0,
            "rotate": 0.0,
            "scale": 0.0,
            "brightness": 0.0,
            "contrast": 0.0,
            "saturation": 0.0,
            **overrides,
        }
    )
