"""Pictures: the plot stage's charts, the evaluate stage's worst-case gallery and inference panels.

- charts: training curves and the test Dice histogram (matplotlib);
- gallery: the lowest-Dice test images with their predictions (matplotlib);
- panel: one inference result per photo (Pillow, fast for thousands of images);
- figures: what the matplotlib figures share (backend, model colours, saving);
- run: ``plot_all``, the plot stage.

Importing the package loads none of them: inference draws its panels without matplotlib's charts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plot_all"]


def __getattr__(name: str) -> Any:
    if name == "plot_all":
        from petseg.plotting.run import plot_all

        return plot_all
    raise AttributeError(f"module 'petseg.plotting' has no attribute {name!r}")
