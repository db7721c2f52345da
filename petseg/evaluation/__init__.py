"""Evaluation: scoring checkpoints on the test cache (scoring), the tables in git (tables), the stage (run).

The scoring functions load on first use, so that reading the tables never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate_models": "run",
    "ModelEvaluation": "scoring",
    "evaluate_checkpoint": "scoring",
    "summarize": "scoring",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # the module's lazy exports (PEP 562): Python calls it, no code does
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"petseg.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'petseg.evaluation' has no attribute {name!r}")
