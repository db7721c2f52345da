"""The evaluate stage: each model's best checkpoint on the test cache, as numbers to diff and pictures to look at.

Outputs, per model: a section of ``metrics/evaluate.json``, the per-image
table ``plots/evaluate/<model>.csv`` and ``plots/evaluate/<model>_worst.png``,
a gallery of the ``evaluate.n_worst`` lowest-Dice test images (image, truth,
prediction). Every checkpoint is found and every model scored before anything
is written, so a bad checkpoint leaves all outputs as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petseg import paths
from petseg.data.cache import load_split
from petseg.device import resolve_device
from petseg.errors import DataError
from petseg.evaluation.scoring import evaluate_checkpoint
from petseg.evaluation.tables import write_per_image_csv
from petseg.io import load_json, remove_stale_temps, write_json
from petseg.models import MODEL_NAMES
from petseg.params import EvaluateParams
from petseg.plotting.gallery import write_gallery

log = logging.getLogger(__name__)


def merge_report(path: str | Path, sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The metrics file's content after replacing ``sections``; other models' sections already there are kept."""
    path = Path(path)
    report: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = load_json(path)
            if isinstance(existing, dict):
                report.update(existing)
        except DataError as exc:
            log.warning("%s; replacing it", exc)
    report.update(sections)
    ordered = {name: report[name] for name in MODEL_NAMES if name in report}
    ordered.update({name: value for name, value in report.items() if name not in ordered})
    return ordered


def evaluate_models(
    model_names: Sequence[str],
    config: EvaluateParams,
    *,
    cache_dir: str | Path = paths.CACHE_DIR,
    models_dir: str | Path = paths.MODELS_DIR,
    metrics_path: str | Path = paths.METRICS_DIR / "evaluate.json",
    plots_dir: str | Path = paths.EVALUATE_DIR,
    device: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Evaluate each model's ``best.pt`` on the test cache and write metrics, per-image tables and galleries."""
    torch_device = resolve_device(device, param="--device")
    checkpoints = {name: paths.best_checkpoint(name, models_dir) for name in model_names}
    split = load_split(cache_dir, "test")
    evaluations = {name: evaluate_checkpoint(path, split, config, torch_device, expected_model=name)
                   for name, path in checkpoints.items()}
    for directory in (Path(plots_dir), Path(metrics_path).parent):
        remove_stale_temps(directory)  # left by a run that was killed mid-write
    sections: dict[str, dict[str, Any]] = {}
    for name, evaluation in evaluations.items():
        write_per_image_csv(paths.per_image_table(name, plots_dir), evaluation.names, evaluation.dice, evaluation.iou)
        write_gallery(paths.gallery(name, plots_dir), evaluation, split, config.n_worst)
        sections[name] = s = evaluation.summary
        log.info("%s: Dice mean %.4f median %.4f (min %.4f, max %.4f), IoU %.4f, pooled Dice %.4f, "
                 "pixel accuracy %.4f on %d test images (checkpoint epoch %d%s)",
                 name, s["dice_mean"], s["dice_median"], s["dice_min"], s["dice_max"], s["iou_mean"],
                 s["dice_pooled"], s["pixel_accuracy"], s["n_images"], s["checkpoint_epoch"],
                 ", flip TTA" if config.tta else "")
    write_json(metrics_path, merge_report(metrics_path, sections))
    return sections
