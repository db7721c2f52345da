"""The plot stage: every input read and checked first, then the charts drawn (errors name the file and its stage)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petseg import paths
from petseg.evaluation.tables import read_breed_csv, read_per_image_csv
from petseg.io import remove_stale_temps
from petseg.models import MODEL_NAMES, model_info
from petseg.plotting.charts import plot_dice_by_breed, plot_dice_histogram, plot_lr, plot_train_val
from petseg.training.log import EPOCH_METRICS, Series, metric_path, read_metric

log = logging.getLogger(__name__)

OUTPUTS = ("dice_curves.png", "loss_curves.png", "lr_curves.png", "dice_histogram.png", "dice_by_breed.png")


def plot_all(
    models: Sequence[str] = MODEL_NAMES,
    *,
    live_root: str | Path = paths.LIVE_DIR,
    evaluate_dir: str | Path = paths.EVALUATE_DIR,
    out_dir: str | Path = paths.PLOTS_DIR,
) -> list[Path]:
    """Read every input first, then write the charts; returns their paths."""
    logs: dict[str, dict[str, Series]] = {}
    scores: dict[str, np.ndarray] = {}
    breeds: dict[str, list[dict[str, object]]] = {}
    for model in models:
        stage = model_info(model).train_stage
        live = paths.live_dir(model, live_root)
        logs[model] = {metric: read_metric(metric_path(live, metric), stage) for metric in EPOCH_METRICS}
        scores[model] = read_per_image_csv(paths.per_image_table(model, evaluate_dir)).scores["dice"]
        breeds[model] = read_breed_csv(paths.breed_table(model, evaluate_dir))
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir)  # left by a run that was killed mid-write
    outputs = [out_dir / name for name in OUTPUTS]
    plot_train_val(
        outputs[0],
        logs,
        "dice",
        "Dice (per image, mean)",
        "Dice per epoch: train (dashed) and validation (solid)",
        unit_range=True,
    )
    plot_train_val(outputs[1], logs, "loss", "loss", "Loss per epoch: train (dashed) and validation (solid)")
    plot_lr(outputs[2], logs)
    plot_dice_histogram(outputs[3], scores)
    plot_dice_by_breed(outputs[4], breeds)
    log.info("plot: wrote %s", ", ".join(str(p) for p in outputs))
    return outputs
