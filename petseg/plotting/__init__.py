"""Pictures: the plot stage's charts and worst-case galleries, and the inference panels.

- charts: training curves, the test Dice histogram, Dice by breed (matplotlib);
- data: the charts' data as one table per chart, for ``dvc plots show``;
- gallery: the lowest-Dice test images with their predictions (matplotlib);
- panel: one inference result per photo (Pillow, fast for thousands of images);
- study, study_vega: a seed study's pictures and their data and templates for ``dvc plots show``
  (``python -m stages.compare --experiments --plots DIR``);
- figures: what the matplotlib figures share (backend, each model's style from the registry, saving);
- run: ``plot_all``, the plot stage.

Importing the package loads none of them: inference draws its panels without matplotlib's charts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plot_all"]


def __getattr__(name: str) -> Any:  # the module's lazy exports (PEP 562): Python calls it, no code does
    if name == "plot_all":
        from petseg.plotting.run import plot_all

        return plot_all
    raise AttributeError(f"module 'petseg.plotting' has no attribute {name!r}")
