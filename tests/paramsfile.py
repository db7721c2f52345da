"""Params files for tests: the repository's params.yaml with dotted overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def default_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


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
