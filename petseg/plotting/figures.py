"""What every matplotlib figure of petseg shares: the headless backend, each model's style, atomic saving."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from petseg.io import atomic_path
from petseg.models import model_info

FIGSIZE = (8.0, 5.0)
DPI = 100
WIDEST, NARROWEST = 3.0, 1.5  # line widths of the first and the last registered model


@dataclass(frozen=True)
class Style:
    """How one model is drawn in every chart: its label, colour and marker from the registry, a line width."""

    label: str
    colour: str
    marker: str
    width: float  # the first model drawn widest, underneath, so that identical curves all stay visible

    @property
    def line(self) -> dict[str, object]:
        """matplotlib keywords of the model's curves."""
        return {"color": self.colour, "marker": self.marker, "linewidth": self.width, "markersize": 2 * self.width}


def model_styles(models: Sequence[str]) -> dict[str, Style]:
    """Each model's style, in the order given (the registry's, in the plot stage)."""
    step = (WIDEST - NARROWEST) / max(1, len(models) - 1)
    styles = {}
    for position, name in enumerate(models):
        info = model_info(name)
        styles[name] = Style(info.label, info.colour, info.marker, round(WIDEST - position * step, 2))
    return styles


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
