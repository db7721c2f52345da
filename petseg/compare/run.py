"""Comparisons that say which noise they cover: the models of one run, a run against another revision, seed studies.

- :func:`compare_models` (the compare stage): the first registered model minus
  each other one on the same test images, paired, written to ``metrics/compare.json``;
- :func:`compare_against` (``python -m stages.compare --against REV``): each
  model's per-image results here minus the same model's at REV;
- :func:`compare_seeds` (``--experiments``, ``--by KEY``): recipes over seeds
  (petseg.compare.seeds).

A paired interval over test images covers which images were drawn, for one
training run per side: it never says "detectable", because how training went
(the seed, the CPU's rounding) moves a run more than that. Only an interval
that resamples seeds too (at least 2 per side) can call a difference detectable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petseg import paths
from petseg.compare.revisions import NotAtRevision, read_text_at, resolve
from petseg.compare.runs import Group, Run, group_runs, lock_stages, read_runs
from petseg.compare.seeds import COMPARED, difference_line, mean_sd, seed_report
from petseg.compare.stats import PairedDifference, paired_difference, seed_difference
from petseg.errors import DataError
from petseg.evaluation.tables import PerImage, parse_per_image_csv, read_per_image_csv
from petseg.io import write_json
from petseg.models import label, model_info

log = logging.getLogger(__name__)

MIN_SHARED = 10  # fewer shared test images than this cannot be compared
ONE_RUN = "over the test images of one training run per side (training noise not included)"


def single_run_line(what: str, difference: PairedDifference) -> str:
    return (
        f"{what} {difference.diff:+.4f}, 95% CI [{difference.low:+.4f}, {difference.high:+.4f}] {ONE_RUN}, "
        f"Wilcoxon p = {difference.p_value:.2g} ({difference.n} images)"
    )


def _pair_numbers(a: PerImage, b: PerImage, what: str) -> dict[str, Any]:
    """The paired differences of two tables of the same images, under the keys of metrics/compare.json; logged."""
    numbers: dict[str, Any] = {}
    for score, mean_name in COMPARED:
        difference = paired_difference(a.scores[score], b.scores[score])
        log.info("%s", single_run_line(f"{what}, {mean_name}:", difference))
        prefix = "" if score == "dice" else f"{score}_"
        numbers.update(
            {
                f"{mean_name}_diff": difference.diff,
                f"{prefix}ci95_low": difference.low,
                f"{prefix}ci95_high": difference.high,
                f"{prefix}p_value": difference.p_value,
            }
        )
        if score == "dice":
            numbers["n_images"] = difference.n
    return numbers


def compare_models(
    models: Sequence[str], *, evaluate_dir: str | Path = paths.EVALUATE_DIR, out: str | Path = paths.COMPARE_FILE
) -> dict[str, Any]:
    """The first model minus each other one on the same test images, from the evaluate stage's per-image tables.

    ``metrics/compare.json`` holds every model's ``<model>_dice_mean``, the first minus the second under flat keys
    (``dice_mean_diff``, ``ci95_low``, ..., ``boundary_iou_ci95_low``, ...), and the first minus each further model
    under ``<first>_minus_<model>`` with the same keys.
    """
    if len(models) < 2:
        raise DataError(f"the compare stage needs at least two models, got {', '.join(models) or 'none'}")
    tables = {model: read_per_image_csv(paths.per_image_table(model, evaluate_dir)) for model in models}
    first, *others = models
    for other in others:
        if tables[other].names != tables[first].names:
            raise DataError(
                f"{paths.per_image_table(first, evaluate_dir)} and {paths.per_image_table(other, evaluate_dir)}"
                ": different test images; re-run evaluate"
            )
    # the means first, under short names of their own, so that `dvc exp show` can show them side by side
    report: dict[str, Any] = {f"{m}_dice_mean": float(np.mean(tables[m].scores["dice"])) for m in models}
    for i, other in enumerate(others):
        numbers = _pair_numbers(tables[first], tables[other], f"{label(first)} minus {label(other)}")
        if i == 0:
            report.update(numbers)
        else:
            report[f"{first}_minus_{other}"] = numbers
    log.info("for a verdict that includes training noise, run seeds: python -m stages.compare --experiments")
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


def _lock_entry(text: str, stage: str, source: str) -> Any:
    """A stage's dvc.lock entry without its outputs (what went in: command, code and data hashes, params)."""
    entry = dict(lock_stages(text, source).get(stage) or {})
    entry.pop("outs", None)
    return entry or None


def _same_training(rev: str, model: str, repo: Path) -> str | None:
    """A line saying so when the model's training stage had identical inputs here and at ``rev`` (dvc.lock).

    Nothing to say when either side has no dvc.lock; one that does not parse is a DataError naming it.
    """
    stage = model_info(model).train_stage
    here_lock = repo / "dvc.lock"
    try:
        there_text = read_text_at(rev, "dvc.lock", repo)
        here_text = here_lock.read_text(encoding="utf-8")
    except (NotAtRevision, FileNotFoundError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{here_lock}: cannot read it ({exc})") from None
    there = _lock_entry(there_text, stage, f"dvc.lock at {rev}")
    here = _lock_entry(here_text, stage, str(here_lock))
    if here is None or here != there:
        return None
    return (
        f"{label(model)}: {stage}'s code, params and data are identical here and at {rev} (dvc.lock): "
        "any difference in its results is training noise"
    )


def _recipe_group(runs: Sequence[Run], anchor: Run | None) -> Group | None:
    """The runs of ``anchor``'s recipe (equal params but the seed)."""
    if anchor is None:
        return None
    members = tuple(run for run in runs if run.recipe() == anchor.recipe())
    return Group(anchor.label, members)


def _seed_lines(rev: str, models: Sequence[str], repo: Path) -> list[str]:
    """Seed-level lines for --against: the spread of one run, and a two-level interval where both sides have seeds."""
    here_runs = read_runs(models, repo=repo)
    here = _recipe_group(here_runs, next((r for r in here_runs if r.label == "workspace"), here_runs[-1]))
    there_runs = read_runs(models, rev=rev, repo=repo, workspace=False)
    there = _recipe_group(there_runs, there_runs[0] if there_runs else None)
    lines = []
    for model in models:
        if here is None or model not in here.models():
            continue
        for score, metric in COMPARED:
            spread = mean_sd([float(row.mean()) for row in here.scores(model, score)])[1]
            if len(here.runs) > 1:
                lines.append(
                    f"{label(model)}, {metric}: one run here varies by {spread:.4f} (sd over {len(here.runs)} seeds), "
                    f"so two single runs differ by about {spread * 2**0.5:.4f} (sd) from training noise alone"
                )
            overlap = there is not None and any(run.texts == other.texts for run in here.runs for other in there.runs)
            if (
                there is not None
                and not overlap
                and model in there.models()
                and min(len(here.runs), len(there.runs)) > 1
            ):
                difference = seed_difference(here.scores(model, score), there.scores(model, score))
                lines.append(difference_line(f"{label(model)}, {metric}: here minus {rev} over seeds:", difference))
    if here is not None and len(here.runs) < 2:
        lines.append("no seed runs of this recipe here: python -m stages.compare --experiments says how to make them")
    return lines


def compare_against(
    rev: str, models: Sequence[str], *, evaluate_dir: str | Path = paths.EVALUATE_DIR, repo: str | Path = "."
) -> tuple[list[str], bool]:
    """Each model's per-image results here minus at ``rev``: report lines, and whether the test sets matched."""
    repo = Path(repo)
    tables = {}
    for model in models:  # every file is read before anything is reported
        table = paths.per_image_table(model, evaluate_dir)
        relative = Path(table).resolve().relative_to(repo.resolve()) if Path(table).is_absolute() else table
        there = parse_per_image_csv(read_text_at(rev, relative, repo), f"{relative} at {rev}")
        tables[model] = (read_per_image_csv(table), there)
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
            lines.append(single_run_line(f"{label(model)}, {mean_name}: here minus {rev}", difference))
        same = _same_training(rev, model, repo)
        if same is not None:
            lines.append(same)
    if same_images:
        lines += _seed_lines(rev, models, repo)
    return lines, same_images


def seed_study(
    models: Sequence[str],
    *,
    by: str | None = None,
    names: Sequence[str] | None = None,
    rev: str = "HEAD",
    repo: str | Path = ".",
) -> tuple[list[Run], list[Group]]:
    """The runs of commit ``rev``'s seed study (its run, its experiments and the workspace, or the experiments
    ``names``) and their groups by recipe, read once: :func:`compare_seeds` reports them, ``--plots`` draws them.

    The workspace belongs to HEAD: it joins the study only when ``rev`` is the HEAD commit.
    """
    at_head = resolve(rev, repo) == resolve("HEAD", repo)
    runs = read_runs(models, rev=rev, repo=repo, workspace=at_head)
    if names:
        unknown = sorted(set(names) - {run.label for run in runs})
        if unknown:
            raise DataError(f"no experiment of this commit is named {', '.join(unknown)} (dvc exp show lists them)")
        runs = [run for run in runs if run.label in names]
    if not runs:
        raise DataError("no evaluated runs here: dvc repro, then dvc exp run --queue -S 'train.seed=0,1,2'")
    return runs, group_runs(runs, by)


def compare_seeds(
    models: Sequence[str],
    *,
    by: str | None = None,
    names: Sequence[str] | None = None,
    rev: str = "HEAD",
    repo: str | Path = ".",
    smallest_effect: float | None = None,
    study: tuple[list[Run], list[Group]] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The seed study's report lines and numbers (``--json``), of ``study`` (:func:`seed_study`) or read here."""
    runs, groups = study if study is not None else seed_study(models, by=by, names=names, rev=rev, repo=repo)
    lines, report = seed_report(runs, groups, models, by, smallest_effect=smallest_effect)
    report["by"] = by
    return lines, report


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """``--json FILE``: the numbers of a report, for scripts."""
    write_json(path, json.loads(json.dumps(report, default=str)))
