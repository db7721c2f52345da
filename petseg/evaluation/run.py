"""The evaluate stage: each model's best checkpoint on the test cache, as numbers to diff and pictures to look at.

Outputs, per model (petseg.paths names them):

- ``metrics/<model>.json``: the figures people compare, the same keys for every
  model, so ``dvc metrics show`` has one row per model;
- ``plots/evaluate/<model>.csv``: per-image scores; ``<model>_by_breed.csv``:
  Dice per breed (petseg.evaluation.tables);
- ``plots/evaluate/<model>_worst.npy``: the predicted masks of the ``evaluate.n_worst``
  lowest-Dice test images, which the plot stage draws as a gallery.

Every checkpoint is found and every model scored before anything is written, so
a bad checkpoint leaves all outputs as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petseg import paths
from petseg.data.cache import Split, load_split
from petseg.device import resolve_device
from petseg.evaluation.scoring import by_breed, evaluate_checkpoint
from petseg.evaluation.tables import worst_indices, write_breed_csv, write_per_image_csv, write_worst_masks
from petseg.io import remove_stale_temps, write_json
from petseg.models import label
from petseg.params import EvaluateParams

log = logging.getLogger(__name__)

# the order of the keys in every metrics/<model>.json
METRIC_KEYS = (
    "dice_mean", "dice_median", "dice_std", "dice_min", "dice_max", "iou_mean", "dice_pooled", "pixel_accuracy",
    "n_images", "threshold", "tta", "postprocess", "checkpoint_epoch", "checkpoint_val_dice", "dice_mean_ignore_border",
    "boundary_iou_mean", "dice_mean_cat", "dice_mean_dog", "parameters", "gflops", "train_seconds_per_epoch",
)  # fmt: skip


def metrics_record(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as ``metrics/<model>.json`` holds it: exactly the METRIC_KEYS, in their order."""
    missing = [key for key in METRIC_KEYS if key not in summary]
    extra = [key for key in summary if key not in METRIC_KEYS]
    if missing or extra:  # the summary and METRIC_KEYS must name the same figures
        raise ValueError(f"the summary and METRIC_KEYS differ: missing {missing}, not in METRIC_KEYS {extra}")
    return {key: summary[key] for key in METRIC_KEYS}


def _note_unlabelled(split: Split) -> None:
    labels = split.labels or []
    missing = len(split) - sum(1 for entry in labels if entry.species is not None and entry.breed is not None)
    if missing:
        log.info(
            "note: %d of %d test images have no species or breed in the split lists (or the cache predates "
            "them): per-species and per-breed figures leave them out",
            missing,
            len(split),
        )


def evaluate_models(
    model_names: Sequence[str],
    config: EvaluateParams,
    *,
    cache_dir: str | Path = paths.CACHE_DIR,
    models_dir: str | Path = paths.MODELS_DIR,
    metrics_dir: str | Path = paths.METRICS_DIR,
    plots_dir: str | Path = paths.EVALUATE_DIR,
    device: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Evaluate each model's ``best.pt`` on the test cache and write its metrics, tables and worst masks."""
    torch_device = resolve_device(device, param="--device")
    checkpoints = {name: paths.best_checkpoint(name, models_dir) for name in model_names}
    split = load_split(cache_dir, "test")
    _note_unlabelled(split)
    evaluations = {
        name: evaluate_checkpoint(path, split, config, torch_device, expected_model=name)
        for name, path in checkpoints.items()
    }
    summaries = {name: metrics_record(evaluation.summary) for name, evaluation in evaluations.items()}
    for directory in (Path(plots_dir), Path(metrics_dir)):
        remove_stale_temps(directory)  # left by a run that was killed mid-write
    for name, evaluation in evaluations.items():
        write_per_image_csv(paths.per_image_table(name, plots_dir), evaluation.table)
        write_breed_csv(paths.breed_table(name, plots_dir), by_breed(evaluation.table))
        worst = evaluation.predicted_masks(worst_indices(evaluation.dice, config.n_worst))
        write_worst_masks(paths.worst_masks(name, plots_dir), worst)
        write_json(paths.metrics_file(name, metrics_dir), s := summaries[name])
        log.info(
            "%s: Dice mean %.4f (median %.4f, ignoring the border %.4f), Boundary IoU %.4f, IoU %.4f, "
            "pooled Dice %.4f on %d test images (checkpoint epoch %d%s)",
            label(name),
            s["dice_mean"],
            s["dice_median"],
            s["dice_mean_ignore_border"],
            s["boundary_iou_mean"],
            s["iou_mean"],
            s["dice_pooled"],
            s["n_images"],
            s["checkpoint_epoch"],
            ", flip TTA" if config.tta else "",
        )
    return summaries
