"""Seed studies: each recipe's mean and spread over seeds, and differences whose intervals include training noise.

``python -m stages.compare --experiments`` (and ``--by KEY``) reads the runs of a
commit (petseg.compare.runs), groups them by recipe and reports, per group and
model, the number of seeds and mean +- sd over seeds of ``dice_mean`` and
``boundary_iou_mean``; then the first registered model minus each other one
within every group, and with ``--by`` each model's difference between groups,
each with a two-level bootstrap interval over seeds and test images
(petseg.compare.stats.seed_difference). Only an interval over at least 2 seeds
per side is called detectable.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from petseg.compare.runs import Group, Run
from petseg.compare.stats import SeedDifference, seed_difference
from petseg.errors import DataError
from petseg.models import label

COMPARED = (("dice", "dice_mean"), ("boundary_iou", "boundary_iou_mean"))  # per-image score, its name as a mean
MORE_SEEDS = "dvc exp run --queue -S 'train.seed=0,1,2' && dvc queue start"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(difference: SeedDifference) -> str:
    """What the interval says, which noise it covers, and the smallest difference the study could detect."""
    if not difference.includes_training_noise:
        return "one seed a side: the interval covers test images only, not training noise"
    interval = "the corrected interval" if difference.family > 1 else "the interval"
    if difference.excludes_zero:
        said = f"over seeds and images, {interval} excludes 0: a detectable difference"
    else:
        said = f"over seeds and images, {interval} contains 0: no detectable difference"
    return f"{said}; this study detects differences of {difference.mde:.3f} or more"


def _correction(difference: SeedDifference, what: str) -> str | None:
    if difference.family < 2:
        return None
    return (
        f"Bonferroni over the {difference.family} comparisons of {what} (each at level "
        f"{difference.alpha:.3g}: simultaneous 95% intervals)"
    )


def difference_line(what: str, difference: SeedDifference) -> str:
    """The difference, its 95% interval (and the corrected one in a family), the verdict, P(a > b) over seeds."""
    adjusted = ""
    if difference.family > 1:
        low, high = difference.interval()
        adjusted = f", {difference.family}-way corrected [{low:+.4f}, {high:+.4f}]"
    line = (
        f"{what} {difference.diff:+.4f}, 95% CI [{difference.low:+.4f}, {difference.high:+.4f}]{adjusted} "
        f"({difference.n_seeds_a} vs {difference.n_seeds_b} seeds, {difference.n_images} images): {verdict(difference)}"
    )
    if difference.p_improvement is not None:
        point, low, high = difference.p_improvement
        chance = (
            "the first beats the second in a run" if difference.paired else "a run of the first beats one of the other"
        )
        line += f"; P({chance}) {point:.2f} [{low:.2f}, {high:.2f}]"
    return line


def smallest_effect_line(what: str, difference: SeedDifference, delta: float) -> str:
    """``--smallest-effect``: how many seeds per side a true difference of ``delta`` needs, from these spreads."""
    if not difference.includes_training_noise:
        return f"{what} a difference of {delta:g}: needs at least 2 seeds a side to measure the training noise first"
    seeds = difference.seeds_needed(delta)
    if seeds is not None:
        return (
            f"{what} a difference of {delta:g} needs {seeds} seeds per side (80% power at level "
            f"{difference.alpha:.3g}, from this study's spreads; it has {difference.n_seeds_a} and "
            f"{difference.n_seeds_b})"
        )
    return (
        f"{what} a difference of {delta:g} is out of reach of more seeds: these {difference.n_images} test images "
        f"alone allow {difference.images_limit():.3f} at best; it needs more test images"
    )


def difference_record(
    metric: str, a: str, b: str, model: str | None, d: SeedDifference, group: str | None = None, family: str = ""
) -> dict[str, Any]:
    """One entry of ``differences`` in ``--json``: what minus what, the difference, its intervals and power."""
    adjusted = d.interval() if d.family > 1 else (None, None)
    improvement = d.p_improvement or (None, None, None)
    return {
        "metric": metric,
        "a": a,
        "b": b,
        "model": model,
        "group": group,
        "diff": d.diff,
        "ci95_low": d.low,
        "ci95_high": d.high,
        "ci_adjusted_low": adjusted[0],
        "ci_adjusted_high": adjusted[1],
        "correction": _correction(d, family),
        "mde": d.mde,
        "n_seeds_a": d.n_seeds_a,
        "n_seeds_b": d.n_seeds_b,
        "n_images": d.n_images,
        "includes_training_noise": d.includes_training_noise,
        "detectable": d.detectable,
        "p_improvement": improvement[0],
        "p_improvement_low": improvement[1],
        "p_improvement_high": improvement[2],
        "verdict": verdict(d),
    }


def _run_means(group: Group, model: str, score: str) -> list[float]:
    return [float(row.mean()) for row in group.scores(model, score)]


def _group_section(
    group: Group, models: Sequence[str], smallest_effect: float | None
) -> tuple[list[str], dict[str, Any], list[dict[str, Any]]]:
    seeds = ", ".join(str(seed) for seed in group.seeds)
    lines = [f"{group.name}: {len(group.runs)} run(s), train.seed {seeds} ({', '.join(r.label for r in group.runs)})"]
    summary: dict[str, Any] = {"name": group.name, "seeds": group.seeds, "runs": [r.label for r in group.runs]}
    summary["models"] = {}
    width = max(len(label(m)) for m in models)
    for model in models:
        cells, values = [], {}
        for score, metric in COMPARED:
            mean, sd = mean_sd(_run_means(group, model, score))
            values[metric] = {"mean": mean, "sd": sd, "n_seeds": len(group.runs)}
            cells.append(f"{metric} {mean:.4f} +- {sd:.4f}")
        summary["models"][model] = values
        lines.append(f"  {label(model):<{width}}  {'   '.join(cells)}  (mean +- sd over seeds)")
    records = []
    first = models[0]
    for other in models[1:]:
        for score, metric in COMPARED:
            a, b = group.scores(first, score), group.scores(other, score)
            difference = seed_difference(a, b, same_runs=True)
            per_run = [float(x - y) for x, y in zip(a.mean(axis=1), b.mean(axis=1))]
            _, spread = mean_sd(per_run)
            what = f"{label(first)} minus {label(other)}, {metric}:"
            lines.append(
                "  "
                + difference_line(what, difference)
                + (f"; single runs differ by {spread:.4f} (sd over seeds)" if len(per_run) > 1 else "")
            )
            if smallest_effect is not None:
                lines.append("    " + smallest_effect_line(what, difference, smallest_effect))
            records.append(difference_record(metric, first, other, None, difference, group=group.name))
    return lines, summary, records


def _same_images(a: Group, b: Group, model: str) -> None:
    here, there = a.runs[0].tables[model].names, b.runs[0].tables[model].names
    if here != there:
        raise DataError(
            f"{model}: the test images of {a.name} ({a.runs[0].label}, {len(here)} images) differ from those of "
            f"{b.name} ({b.runs[0].label}, {len(there)} images): evaluate every run on one test set"
        )


def seed_report(
    runs: Sequence[Run],
    groups: Sequence[Group],
    models: Sequence[str],
    by: str | None = None,
    *,
    smallest_effect: float | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The report's lines, and the same numbers for ``--json`` (``groups``, ``differences``)."""
    shared = [m for m in models if all(m in g.models() for g in groups)]
    if not shared:
        raise DataError(f"no model has per-image tables in every run of the groups (looked for {', '.join(models)})")
    lines = [f"{len(runs)} run(s) in {len(groups)} group(s) of equal params but train.seed"]
    report: dict[str, Any] = {"groups": [], "differences": []}
    for group in groups:
        section, summary, records = _group_section(group, shared, smallest_effect)
        lines += section
        report["groups"].append(summary)
        report["differences"] += records
    if by is not None and len(groups) > 1:
        base, others = groups[0], groups[1:]
        lines.append(f"between groups, by {by} (each group minus {base.name}):")
        if len(others) > 1:
            lines.append(
                f"  {len(others)} comparisons per model and metric: each family (one model, one metric) is corrected "
                f"by Bonferroni, level 0.05 / {len(others)}; 'detectable' follows the corrected interval"
            )
        for group in others:
            for model in shared:
                _same_images(group, base, model)
                for score, metric in COMPARED:
                    difference = seed_difference(group.scores(model, score), base.scores(model, score))
                    difference = difference.adjusted(len(others)) if len(others) > 1 else difference
                    what = f"  {label(model)}, {metric}: {group.name} minus {base.name}:"
                    lines.append(difference_line(what, difference))
                    if smallest_effect is not None:
                        lines.append("  " + smallest_effect_line(what, difference, smallest_effect))
                    family = f"{label(model)}, {metric} (each group minus {base.name})"
                    report["differences"].append(
                        difference_record(metric, group.name, base.name, model, difference, family=family)
                    )
    elif len(groups) > 1:
        lines.append("the groups differ in more than the seed: compare them with --by KEY")
    if any(len(group.runs) < 2 for group in groups):
        lines.append(f"a group with one seed has no measure of training noise; more seeds: {MORE_SEEDS}")
    return lines, report


def metrics_summary(report: dict[str, Any]) -> dict[str, Any]:
    """``--metrics FILE``: the study as flat numbers for ``dvc metrics show`` (no lists; DVC skips them).

    Per group: ``n_seeds``, ``<model>_<metric>_mean`` and ``_sd`` over seeds, and for each difference within
    the group ``<a>_minus_<b>_<metric>_diff``, ``_ci95_low``, ``_ci95_high``, ``_mde`` and ``_detectable``. One group
    is written flat; several are nested under their names.
    """
    summary: dict[str, dict[str, Any]] = {}
    for group in report["groups"]:
        entry: dict[str, Any] = {"n_seeds": len(group["seeds"])}
        for model, figures in group["models"].items():
            for metric, stats in figures.items():
                entry[f"{model}_{metric}_mean"] = stats["mean"]
                entry[f"{model}_{metric}_sd"] = stats["sd"]
        for record in report["differences"]:
            if record["group"] == group["name"] and record["model"] is None:
                name = f"{record['a']}_minus_{record['b']}_{record['metric']}"
                for key in ("diff", "ci95_low", "ci95_high", "mde", "detectable"):
                    entry[f"{name}_{key}"] = record[key]
        summary[group["name"]] = entry
    return next(iter(summary.values())) if len(summary) == 1 else summary
