"""The plot stage: training curves and test Dice of both models as PNGs that compare them at a glance.

Reads the per-epoch DVCLive logs of training (``dvclive/<model>/plots/metrics/
<metric>.tsv``, columns ``step`` and the metric, step = epoch number from 1) and the
per-image tables of the evaluate stage (``plots/evaluate/<model>.csv``), and
writes, with UNet in blue and ResNet34-UNet in red:

- ``dice_curves.png``: train (dashed) and validation (solid) Dice per epoch;
- ``loss_curves.png``: train (dashed) and validation (solid) loss per epoch;
- ``lr_curves.png``: learning rate per epoch;
- ``dice_histogram.png``: distribution of per-image test Dice.

Every input is checked before anything is drawn; a missing or malformed one is
an error naming the file and the stage that writes it.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petseg.errors import DataError
from petseg.io import atomic_path, remove_stale_temps
from petseg.params import MODEL_NAMES

log = logging.getLogger(__name__)

MODEL_LABELS = {"unet": "UNet", "resnet34_unet": "ResNet34-UNet"}
MODEL_COLOURS = {"unet": "tab:blue", "resnet34_unet": "tab:red"}
# UNet drawn wider underneath, so that identical curves (the same lr schedule) both stay visible
MODEL_STYLES = {
    "unet": {"linewidth": 3.0, "marker": "o", "markersize": 6},
    "resnet34_unet": {"linewidth": 1.5, "marker": "s", "markersize": 4},
}
LOG_SCALE_RATIO = 100.0  # a positive series spanning more than this factor is drawn on a log axis
# the stage that writes each model's training logs
TRAIN_STAGES = {"unet": "train_unet", "resnet34_unet": "train_resnet"}
FIGSIZE = (8.0, 5.0)
DPI = 100
OUTPUTS = ("dice_curves.png", "loss_curves.png", "lr_curves.png", "dice_histogram.png")


@dataclass(frozen=True)
class Series:
    """One logged metric of one model: epochs (from 1) and values."""

    epochs: np.ndarray
    values: np.ndarray


def metric_path(live_root: str | Path, model: str, metric: str) -> Path:
    """``<live_root>/<model>/plots/metrics/<metric>.tsv`` as DVCLive writes it (metric like ``val/dice``)."""
    return Path(live_root) / model / "plots" / "metrics" / f"{metric}.tsv"


def _read_table(path: Path, delimiter: str, stage: str, what: str) -> list[dict[str, str]]:
    """Rows of a CSV/TSV ``what`` written by ``stage``; it must end in a newline (else it was cut short)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; the {stage} stage writes it (dvc repro {stage})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}") from None
    if text and not text.endswith("\n"):
        raise DataError(f"{path}: truncated {what} (its last line is incomplete); re-run {stage}")
    try:
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}") from None


def read_metric(path: str | Path, stage: str) -> Series:
    """Read one DVCLive TSV (``step``, value column); errors name the file and the stage that writes it."""
    path = Path(path)
    column = path.stem
    rows = _read_table(path, "\t", stage, "the metric log")
    try:
        steps = np.array([int(row["step"]) for row in rows], dtype=np.int64)
        values = np.array([float(row[column]) for row in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: not a DVCLive metric log with columns step and {column} ({exc!r}); re-run {stage}"
        ) from None
    if len(rows) == 0:
        raise DataError(f"{path}: no epochs logged; re-run {stage}")
    if np.any(np.diff(steps) <= 0):
        raise DataError(f"{path}: epochs not in increasing order (logs of two runs mixed?); re-run {stage}")
    return Series(steps, values)


def read_per_image_csv(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read an evaluate per-image table: names, Dice and IoU; a bad file is a DataError naming it."""
    path = Path(path)
    rows = _read_table(path, ",", "evaluate", "the per-image table")
    try:
        names = [row["name"] for row in rows]
        dice = np.array([float(row["dice"]) for row in rows], dtype=np.float64)
        iou = np.array([float(row["iou"]) for row in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: not a per-image table with columns name,dice,iou ({exc!r}); re-run evaluate"
        ) from None
    if len(rows) == 0:
        raise DataError(f"{path}: the per-image table is empty; re-run evaluate")
    for label, scores in (("dice", dice), ("iou", iou)):
        if not np.all((scores >= 0.0) & (scores <= 1.0)):  # also false for NaN
            raise DataError(f"{path}: {label} values outside [0, 1]; re-run evaluate")
    return names, dice, iou


# --------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    try:
        with atomic_path(path) as temp:
            fig.savefig(temp, format="png", dpi=DPI)
    finally:
        plt.close(fig)


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
    metric: str,
    ylabel: str,
    title: str,
    *,
    unit_range: bool = False,
) -> None:
    """Train (dashed) and validation (solid) curves of ``metric`` for each model, one chart."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    values: list[float] = []
    for model, series in logs.items():
        colour, label = MODEL_COLOURS.get(model), MODEL_LABELS.get(model, model)
        style = MODEL_STYLES.get(model, {})
        train, val = series[f"train/{metric}"], series[f"val/{metric}"]
        axis.plot(train.epochs, train.values, linestyle="--", color=colour, label=f"{label} train", **style)
        axis.plot(val.epochs, val.values, linestyle="-", color=colour, label=f"{label} validation", **style)
        values.extend([*train.values, *val.values])
        if metric == "dice" and len(val.values):
            best = int(np.argmax(val.values))
            axis.plot(val.epochs[best], val.values[best], marker="*", markersize=13, color=colour, linestyle="none",
                      label=f"{label} best validation {val.values[best]:.3f} (epoch {val.epochs[best]})")
    _epoch_axis(axis)
    if unit_range:
        axis.set_ylim(0.0, 1.0)
    elif _wide_positive(values):
        axis.set_yscale("log")
        ylabel += " (log scale)"
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, Path(path))


def plot_lr(path: str | Path, logs: dict[str, dict[str, Series]]) -> None:
    """Learning rate per epoch of each model (log scale when all positive)."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    values: list[float] = []
    for model, series in logs.items():
        lr = series["lr"]
        values.extend(lr.values)
        axis.plot(lr.epochs, lr.values, color=MODEL_COLOURS.get(model), label=MODEL_LABELS.get(model, model),
                  **MODEL_STYLES.get(model, {}))
    if values and min(values) > 0:
        axis.set_yscale("log")
    _epoch_axis(axis)
    axis.set_ylabel("learning rate (at the start of the epoch)")
    axis.set_title("Learning rate per epoch")
    axis.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, Path(path))


def plot_dice_histogram(path: str | Path, scores: dict[str, np.ndarray]) -> None:
    """Histogram of per-image test Dice of each model, with its mean and median."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    bins = np.linspace(0.0, 1.0, 41)
    for model, dice in scores.items():
        colour, label = MODEL_COLOURS.get(model), MODEL_LABELS.get(model, model)
        axis.hist(dice, bins=bins, color=colour, alpha=0.35)
        axis.hist(dice, bins=bins, color=colour, histtype="step", linewidth=1.5,
                  label=f"{label}: mean {np.mean(dice):.3f}, median {np.median(dice):.3f} ({len(dice)} images)")
        axis.axvline(float(np.mean(dice)), color=colour, linestyle="--", linewidth=1)
    axis.set_xlim(0.0, 1.0)
    axis.set_xlabel("per-image Dice (dashed: mean)")
    axis.set_ylabel("test images")
    axis.set_title("Per-image test Dice")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save(fig, Path(path))


def plot_all(
    models: Sequence[str] = MODEL_NAMES,
    *,
    live_root: str | Path = "dvclive",
    evaluate_dir: str | Path = "plots/evaluate",
    out_dir: str | Path = "plots",
) -> list[Path]:
    """Read every input first, then write the four PNGs; returns their paths."""
    logs: dict[str, dict[str, Series]] = {}
    scores: dict[str, np.ndarray] = {}
    for model in models:
        stage = TRAIN_STAGES.get(model, f"train_{model}")
        metrics = ("train/dice", "val/dice", "train/loss", "val/loss", "lr")
        logs[model] = {metric: read_metric(metric_path(live_root, model, metric), stage) for metric in metrics}
        scores[model] = read_per_image_csv(Path(evaluate_dir) / f"{model}.csv")[1]
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir)  # left by a run that was killed mid-write
    paths = [out_dir / name for name in OUTPUTS]
    plot_train_val(paths[0], logs, "dice", "Dice (per image, mean)",
                   "Dice per epoch: train (dashed) and validation (solid)", unit_range=True)
    plot_train_val(paths[1], logs, "loss", "loss", "Loss per epoch: train (dashed) and validation (solid)")
    plot_lr(paths[2], logs)
    plot_dice_histogram(paths[3], scores)
    log.info("plot: wrote %s", ", ".join(str(p) for p in paths))
    return paths
