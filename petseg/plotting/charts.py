"""The plot stage's charts: training curves of every model on one chart each, the test Dice histogram, Dice by breed.

Each model in its registry colour and marker everywhere (petseg.plotting.figures.Style); train dashed,
validation solid. Every function returns the labels of the chart's legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petseg.plotting.figures import DPI, FIGSIZE, Style, pyplot, save
from petseg.training.log import Series

LOG_SCALE_RATIO = 100.0  # a positive series spanning more than this factor is drawn on a log axis


def _wide_positive(values: Sequence[float]) -> bool:
    finite = [v for v in values if np.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_SCALE_RATIO


def _epoch_axis(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.grid(True, alpha=0.3)


def plot_train_val(
    path: str | Path,
    logs: dict[str, dict[str, Series]],
    styles: dict[str, Style],
    metric: str,
    ylabel: str,
    title: str,
    *,
    unit_range: bool = False,
) -> list[str]:
    """Train (dashed) and validation (solid) curves of ``metric`` for each model, one chart."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    values: list[float] = []
    for model, series in logs.items():
        style = styles[model]
        train, val = series[f"train/{metric}"], series[f"val/{metric}"]
        axis.plot(train.epochs, train.values, linestyle="--", label=f"{style.label} train", **style.line)
        axis.plot(val.epochs, val.values, linestyle="-", label=f"{style.label} validation", **style.line)
        values.extend([*train.values, *val.values])
        if metric == "dice" and len(val.values):
            best = int(np.argmax(val.values))
            axis.plot(
                val.epochs[best],
                val.values[best],
                marker="*",
                markersize=13,
                color=style.colour,
                linestyle="none",
                label=f"{style.label} best validation {val.values[best]:.3f} (epoch {val.epochs[best]})",
            )
    _epoch_axis(axis)
    if unit_range:
        axis.set_ylim(0.0, 1.0)
    elif _wide_positive(values):
        axis.set_yscale("log")
        ylabel += " (log scale)"
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    return _finish(fig, axis, path, fontsize=8, loc="best")


def _finish(fig, axis, path: str | Path, **legend) -> list[str]:
    """Draw the legend, save the chart and return the legend's labels."""
    labels = axis.get_legend_handles_labels()[1]
    axis.legend(**legend)
    fig.tight_layout()
    save(fig, path)
    return labels


def plot_lr(path: str | Path, logs: dict[str, dict[str, Series]], styles: dict[str, Style]) -> list[str]:
    """Learning rate per epoch of each model (log scale when all positive)."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    values: list[float] = []
    for model, series in logs.items():
        lr = series["lr"]
        values.extend(lr.values)
        axis.plot(lr.epochs, lr.values, label=styles[model].label, **styles[model].line)
    if values and min(values) > 0:
        axis.set_yscale("log")
    _epoch_axis(axis)
    axis.set_ylabel("learning rate (at the start of the epoch)")
    axis.set_title("Learning rate per epoch")
    return _finish(fig, axis, path, fontsize=8)


def plot_dice_histogram(path: str | Path, scores: dict[str, np.ndarray], styles: dict[str, Style]) -> list[str]:
    """Histogram of per-image test Dice of each model, with its mean and median."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    bins = np.linspace(0.0, 1.0, 41)
    for model, dice in scores.items():
        colour, label = styles[model].colour, styles[model].label
        axis.hist(dice, bins=bins, color=colour, alpha=0.35)
        axis.hist(
            dice,
            bins=bins,
            color=colour,
            histtype="step",
            linewidth=1.5,
            label=f"{label}: mean {np.mean(dice):.3f}, median {np.median(dice):.3f} ({len(dice)} images)",
        )
        axis.axvline(float(np.mean(dice)), color=colour, linestyle="--", linewidth=1)
    axis.set_xlim(0.0, 1.0)
    axis.set_xlabel("per-image Dice (dashed: mean)")
    axis.set_ylabel("test images")
    axis.set_title("Per-image test Dice")
    axis.grid(True, alpha=0.3)
    return _finish(fig, axis, path, fontsize=8, loc="upper left")


def plot_dice_by_breed(
    path: str | Path, rows: dict[str, list[dict[str, object]]], styles: dict[str, Style]
) -> list[str]:
    """Mean test Dice per breed, one horizontal bar per model, breeds in the official class order."""
    plt = pyplot()
    breeds: list[str] = []
    for model_rows in rows.values():
        breeds += [str(row["breed"]) for row in model_rows if row["breed"] not in breeds]
    height = max(FIGSIZE[1], 0.32 * len(breeds) * max(1, len(rows)) + 1.5)
    fig, axis = plt.subplots(figsize=(FIGSIZE[0], height), dpi=DPI)
    bar = 0.8 / max(1, len(rows))
    positions = np.arange(len(breeds))
    for k, (model, model_rows) in enumerate(rows.items()):
        found = {str(row["breed"]): row for row in model_rows}
        values = [float(found[b]["dice_mean"]) if b in found else np.nan for b in breeds]
        axis.barh(
            positions + (k - (len(rows) - 1) / 2) * bar,
            values,
            height=bar,
            color=styles[model].colour,
            label=styles[model].label,
        )
    counts = {str(row["breed"]): (row["n"], row["species"]) for model_rows in rows.values() for row in model_rows}
    axis.set_yticks(positions, [f"{b} ({counts[b][1]}, n={counts[b][0]})" for b in breeds], fontsize=7)
    if not breeds:
        axis.text(0.5, 0.5, "no breed in the split lists of the test images", ha="center", transform=axis.transAxes)
    axis.invert_yaxis()  # the first breed on top
    axis.set_xlim(0.0, 1.0)
    axis.set_xlabel("mean per-image test Dice")
    axis.set_title("Test Dice by breed")
    axis.grid(True, axis="x", alpha=0.3)
    return _finish(fig, axis, path, fontsize=8, loc="lower right")
