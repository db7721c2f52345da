"""Comparisons with a sense of noise: the two models, a model against itself at another revision, several runs.

- :func:`compare_models` (the compare stage): UNet minus ResNet34-UNet on the same
  test images, paired, written to ``metrics/compare.json``;
- :func:`compare_against` (``python stages/compare.py --against REV``): each
  model's per-image results in the workspace minus the same model's at REV;
- :func:`summarize_runs` (``--experiments``): mean and spread of each model's
  ``dice_mean`` over DVC experiments, e.g. a seed study.

Differences come with a 95% paired bootstrap interval and a Wilcoxon p-value
(petseg.compare.stats); an interval that contains 0 is reported in words as no
detectable change.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petseg import paths
from petseg.compare.revisions import experiment_refs, read_text_at
from petseg.compare.stats import PairedDifference, paired_difference
from petseg.errors import DataError
from petseg.evaluation.tables import PerImage, parse_per_image_csv, read_per_image_csv
from petseg.io import write_json
from petseg.models import label

log = logging.getLogger(__name__)

MIN_SHARED = 10  # fewer shared test images than this cannot be compared
COMPARED = (("dice", "dice_mean"), ("boundary_iou", "boundary_iou_mean"))  # per-image score, its name as a mean


def _verdict(difference: PairedDifference) -> str:
    if difference.detectable:
        return "the interval excludes 0: a detectable difference"
    return "the interval contains 0: no detectable change"


def _line(what: str, difference: PairedDifference) -> str:
    return (
        f"{what} {difference.diff:+.4f}, 95% CI [{difference.low:+.4f}, {difference.high:+.4f}], "
        f"Wilcoxon p = {difference.p_value:.2g} ({difference.n} images): {_verdict(difference)}"
    )


def compare_models(
    first: str, second: str, *, evaluate_dir: str | Path = paths.EVALUATE_DIR, out: str | Path = paths.COMPARE_FILE
) -> dict[str, Any]:
    """``first`` minus ``second`` on the same test images, from the evaluate stage's per-image tables."""
    a = read_per_image_csv(paths.per_image_table(first, evaluate_dir))
    b = read_per_image_csv(paths.per_image_table(second, evaluate_dir))
    if a.names != b.names:
        raise DataError(
            f"{paths.per_image_table(first, evaluate_dir)} and {paths.per_image_table(second, evaluate_dir)}"
            ": different test images; re-run evaluate for both models"
        )
    # both means first, under short names of their own, so that `dvc exp show` can show them side by side
    report: dict[str, Any] = {
        f"{first}_dice_mean": float(np.mean(a.scores["dice"])),
        f"{second}_dice_mean": float(np.mean(b.scores["dice"])),
    }
    for score, mean_name in COMPARED:
        difference = paired_difference(a.scores[score], b.scores[score])
        prefix = "" if score == "dice" else f"{score}_"
        report.update(
            {
                f"{mean_name}_diff": difference.diff,
                f"{prefix}ci95_low": difference.low,
                f"{prefix}ci95_high": difference.high,
                f"{prefix}p_value": difference.p_value,
            }
        )
        if score == "dice":
            report["n_images"] = difference.n
        log.info("%s", _line(f"{label(first)} minus {label(second)}, {mean_name}:", difference))
    write_json(out, report)
    return report


def _pair(here: PerImage, there: PerImage, rev: str, model: str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Indices of the images both tables hold (here, there), and a note when the test sets differ."""
    position = {name: i for i, name in enumerate(there.names)}
    shared = [name for name in here.names if name in position]
    if len(shared) < MIN_SHARED:
        raise DataError(
            f"{model}: the test images here and at {rev} share only {len(shared)} image(s) "
            f"(at least {MIN_SHARED} are needed to compare)"
        )
    note = None
    if len(shared) != len(here.names) or len(shared) != len(there.names):
        note = (
            f"{model}: the test images differ from {rev}'s ({len(here.names)} here, {len(there.names)} there): "
            f"comparing the {len(shared)} images both have"
        )
    here_index = np.array([i for i, name in enumerate(here.names) if name in position])
    return here_index, np.array([position[name] for name in shared]), note


def compare_against(
    rev: str, models: Sequence[str], *, evaluate_dir: str | Path = paths.EVALUATE_DIR, repo: str | Path = "."
) -> tuple[list[str], bool]:
    """Each model's per-image results here minus at ``rev``: report lines, and whether the test sets matched."""
    tables = {}
    for model in models:  # every file is read before anything is reported
        table = paths.per_image_table(model, evaluate_dir)
        relative = Path(table).resolve().relative_to(Path(repo).resolve()) if Path(table).is_absolute() else table
        tables[model] = (
            read_per_image_csv(table),
            parse_per_image_csv(read_text_at(rev, relative, repo), f"{relative} at {rev}"),
        )
    lines, same_images = [], True
    for model, (here, there) in tables.items():
        here_index, there_index, note = _pair(here, there, rev, model)
        if note is not None:
            lines.append(f"note: {note}")
            same_images = False
        for score, mean_name in COMPARED:
            if score not in here.scores or score not in there.scores:
                lines.append(f"{label(model)}: {mean_name} is not in both tables (evaluated before it existed)")
                continue
            difference = paired_difference(here.scores[score][here_index], there.scores[score][there_index])
            lines.append(_line(f"{label(model)}, {mean_name}: here minus {rev}", difference))
    return lines, same_images


def summarize_runs(names: Sequence[str] | None, models: Sequence[str], *, repo: str | Path = ".") -> list[str]:
    """Mean and spread of each model's ``dice_mean`` (and of the paired difference) over experiments."""
    refs = experiment_refs(repo)
    names = list(names) if names else sorted(refs)
    if not names:
        raise DataError("no DVC experiments to summarize (run some first: dvc exp run --queue -S 'train.seed=0,1,2')")
    values: dict[str, list[float]] = {model: [] for model in models}
    differences: list[tuple[float, bool]] = []
    for name in names:
        for model in models:
            text = read_text_at(name, paths.metrics_file(model), repo)
            values[model].append(float(json.loads(text)["dice_mean"]))
        try:
            compare = json.loads(read_text_at(name, paths.COMPARE_FILE, repo))
            differences.append((compare["dice_mean_diff"], not compare["ci95_low"] <= 0 <= compare["ci95_high"]))
        except DataError:
            pass
    lines = [f"{len(names)} run(s): {', '.join(names)}"]
    for model, series in values.items():
        spread = statistics.stdev(series) if len(series) > 1 else 0.0
        lines.append(
            f"{label(model)}: dice_mean {statistics.mean(series):.4f} +- {spread:.4f} (sd over runs), "
            f"min {min(series):.4f}, max {max(series):.4f}"
        )
    if differences:
        diffs = [d for d, _ in differences]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        lines.append(
            f"{label(models[0])} minus {label(models[1])}: {statistics.mean(diffs):+.4f} +- {spread:.4f} "
            f"(sd over runs); detectable within {sum(d for _, d in differences)} of {len(diffs)} run(s)"
        )
    return lines
