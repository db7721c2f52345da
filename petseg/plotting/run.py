"""The plot stage: every input read and checked first, then the charts, their data and the galleries drawn.

Errors name the file and the stage that writes it. Every model of the registry
is drawn in its own colour, with its own label (petseg.models.registry).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petseg import paths
from petseg.data.cache import load_split
from petseg.evaluation.tables import PerImage, read_breed_csv, read_per_image_csv, read_worst_masks
from petseg.io import remove_stale_temps
from petseg.models import MODEL_NAMES, model_info
from petseg.plotting.charts import plot_dice_by_breed, plot_dice_histogram, plot_lr, plot_train_val
from petseg.plotting.data import write_chart_data
from petseg.plotting.figures import model_styles
from petseg.plotting.gallery import write_gallery
from petseg.training.log import EPOCH_METRICS, Series, metric_path, read_metric

log = logging.getLogger(__name__)

OUTPUTS = ("dice_curves.png", "loss_curves.png", "lr_curves.png", "dice_histogram.png", "dice_by_breed.png")


def plot_all(
    models: Sequence[str] = MODEL_NAMES,
    *,
    live_root: str | Path = paths.LIVE_DIR,
    evaluate_dir: str | Path = paths.EVALUATE_DIR,
    cache_dir: str | Path = paths.CACHE_DIR,
    out_dir: str | Path = paths.PLOTS_DIR,
) -> dict[str, list[str]]:
    """Read every input first, then write the charts (``out_dir``), their data (``data/``) and galleries (``gallery/``).

    Returns the legend labels of each chart, by file name.
    """
    styles = model_styles(models)
    logs: dict[str, dict[str, Series]] = {}
    tables: dict[str, PerImage] = {}
    breeds: dict[str, list[dict[str, object]]] = {}
    split = load_split(cache_dir, "test")
    masks: dict[str, np.ndarray | None] = {}
    for model in models:
        stage = model_info(model).train_stage
        live = paths.live_dir(model, live_root)
        logs[model] = {metric: read_metric(metric_path(live, metric), stage) for metric in EPOCH_METRICS}
        tables[model] = read_per_image_csv(paths.per_image_table(model, evaluate_dir))
        breeds[model] = read_breed_csv(paths.breed_table(model, evaluate_dir))
        masks[model] = read_worst_masks(paths.worst_masks(model, evaluate_dir), split.image_size)
    out_dir = Path(out_dir)
    data_dir, gallery_dir = out_dir / paths.PLOT_DATA_DIR.name, out_dir / paths.GALLERY_DIR.name
    for directory in (out_dir, data_dir, gallery_dir):
        remove_stale_temps(directory)  # left by a run that was killed mid-write
    scores = {model: table.scores["dice"] for model, table in tables.items()}
    outputs = [out_dir / name for name in OUTPUTS]
    dice_title = "Dice per epoch: train (dashed) and validation (solid)"
    loss_title = "Loss per epoch: train (dashed) and validation (solid)"
    legends = {
        OUTPUTS[0]: plot_train_val(
            outputs[0], logs, styles, "dice", "Dice (per image, mean)", dice_title, unit_range=True
        ),
        OUTPUTS[1]: plot_train_val(outputs[1], logs, styles, "loss", "loss", loss_title),
        OUTPUTS[2]: plot_lr(outputs[2], logs, styles),
        OUTPUTS[3]: plot_dice_histogram(outputs[3], scores, styles),
        OUTPUTS[4]: plot_dice_by_breed(outputs[4], breeds, styles),
    }
    outputs += write_chart_data(data_dir, styles, logs, scores, breeds)
    for model in models:
        write_gallery(paths.gallery(model, gallery_dir), styles[model].label, tables[model], masks[model], split)
    log.info("plot: wrote %s and the galleries in %s", ", ".join(str(p) for p in outputs), gallery_dir)
    return legends
