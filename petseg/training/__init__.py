"""Training, one concern per module.

- batches: the seeded shuffle of each epoch and batches gathered from the cache on the device;
- optim: optimizer and lr schedule from the params;
- loops: ``train_one_epoch`` and ``validate``;
- resume: what a checkpoint must share with a run to be continued, RNG state, the folder lock;
- log: the per-epoch DVCLive log (and reading it back; no torch needed);
- run: ``fit``, the whole run, top to bottom.

``fit`` and ``FitResult`` load on first use, so that reading the logs never imports torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FitResult", "fit"]


def __getattr__(name: str) -> Any:  # the module's lazy exports (PEP 562): Python calls it, no code does
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("petseg.training.run"), name)
    raise AttributeError(f"module 'petseg.training' has no attribute {name!r}")
