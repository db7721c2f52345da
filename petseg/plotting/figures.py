"""What every matplotlib figure of petseg shares: the headless backend, model colours and styles, atomic saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petseg.io import atomic_path

FIGSIZE = (8.0, 5.0)
DPI = 100
# one colour per model, in every chart (models without an entry take matplotlib's next colour)
MODEL_COLOURS = {"unet": "tab:blue", "resnet34_unet": "tab:red"}
# UNet drawn wider underneath, so that identical curves (the same lr schedule) both stay visible
MODEL_STYLES: dict[str, dict[str, Any]] = {
    "unet": {"linewidth": 3.0, "marker": "o", "markersize": 6},
    "resnet34_unet": {"linewidth": 1.5, "marker": "s", "markersize": 4},
}


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = DPI) -> None:
    """Write a figure as PNG atomically, and close it."""
    plt = pyplot()
    try:
        with atomic_path(path) as temp:
            fig.savefig(temp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
