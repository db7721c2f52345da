"""A seed study's numbers for its pictures: learning-curve bands over seeds, and per-image scores averaged over seeds.

From the runs the report read (petseg.compare.run.seed_study), never a second reading of them; the
drawing is petseg.plotting.study's, which draws the differences from the report's ``differences`` as
they are (never recomputed).

- :func:`band_rows`: per group (recipe), model, logged metric and epoch, the mean over the group's seeds,
  the band's ends (``low``, ``high``: the minimum and maximum over seeds, :data:`BAND`), the sample sd,
  and the number of seeds logged at that epoch. Each run's DVCLive log
  (``dvclive/<model>/plots/metrics/<metric>.tsv``) is read as that run left it: from its commit or
  experiment in git, or from the workspace.
- :func:`image_rows`: for the first group, each test image's Dice of the first model and of each other
  one, averaged over the group's seeds, their difference, and its rank by size (1: the images where the
  two disagree most). The first pair is the headline difference: the report's first entry.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petseg import paths
from petseg.compare.revisions import NotAtRevision
from petseg.compare.runs import Group, Run
from petseg.errors import DataError
from petseg.io import parse_table
from petseg.models import model_info

LOGGED = {"val_dice": "val/dice", "train_loss": "train/loss"}  # chart -> DVCLive metric
BAND = "min\u2013max over seeds"  # what low and high are: the smallest and the largest value over seeds


def log_path(model: str, metric: str) -> Path:
    """Where a run keeps a model's DVCLive log of ``metric`` (``val/dice``), from the repository root."""
    return paths.live_dir(model) / "plots" / "metrics" / f"{metric}.tsv"


def parse_log(text: str, column: str, source: str, stage: str) -> dict[int, float]:
    """A DVCLive TSV (columns ``step``: the epoch from 1, and ``column``) as epoch -> value."""
    rows = parse_table(text, "\t", source, stage, "the metric log")
    try:
        values = {int(row["step"]): float(row[column]) for row in rows}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{source}: not a DVCLive metric log with columns step and {column} ({exc!r})") from None
    if len(values) != len(rows):
        raise DataError(f"{source}: an epoch is logged twice (logs of two runs mixed?); re-run {stage}")
    return values


def _run_log(run: Run, model: str, metric: str) -> dict[int, float] | None:
    """A run's log of one metric; None when the run has none (a DataError when it has a broken one)."""
    if run.read is None:
        return None
    path = log_path(model, metric)
    try:
        text = run.read(path)
    except NotAtRevision:
        return None
    source = f"{path.as_posix()} at {run.label}"
    return parse_log(text, metric.rsplit("/", 1)[-1], source, model_info(model).train_stage)


def _band(group: Group, model: str, chart: str, logs: list[dict[int, float]]) -> list[dict[str, Any]]:
    rows = []
    for epoch in sorted({epoch for log in logs for epoch in log}):
        values = [log[epoch] for log in logs if epoch in log]
        rows.append(
            {
                "group": group.name,
                "model": model,
                "metric": chart,
                "epoch": epoch,
                "mean": statistics.fmean(values),
                "low": min(values),
                "high": max(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n_seeds": len(values),
                "seeds": len(logs),
            }
        )
    return rows


def band_rows(groups: Sequence[Group], models: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The bands of every group, model and :data:`LOGGED` metric (keys group, model, metric, epoch, mean, low,
    high, sd, n_seeds, seeds), and notes on the runs that logged nothing (they are left out of the band, and its
    seed count says so)."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for group in groups:
        for model in models:
            for chart, metric in LOGGED.items():
                logs, missing = [], []
                for run in group.runs:
                    log = _run_log(run, model, metric)
                    if log is None:
                        missing.append(run.label)
                    else:
                        logs.append(log)
                if missing:
                    notes.append(
                        f"{group.name}, {model}: no DVCLive log of {metric} in {', '.join(missing)} "
                        f"({len(logs)} of {len(group.runs)} seeds in its band)"
                    )
                rows += _band(group, model, chart, logs)
    return rows, notes


def image_rows(groups: Sequence[Group], models: Sequence[str]) -> list[dict[str, Any]]:
    """Per test image of the first group: the first model's Dice and each other model's, averaged over seeds
    (keys group, a, b, image, a_dice, b_dice, diff, rank, n_seeds); the first model minus the second first."""
    if not groups:
        return []
    group = groups[0]
    first, *others = [m for m in models if m in group.models()]
    rows: list[dict[str, Any]] = []
    a_scores = group.scores(first, "dice")
    for other in others:
        b_scores = group.scores(other, "dice")
        a_mean, b_mean = a_scores.mean(axis=0), b_scores.mean(axis=0)
        diff = a_mean - b_mean
        names = group.runs[0].tables[first].names
        order = sorted(range(len(names)), key=lambda i: (-abs(float(diff[i])), names[i]))
        rank = np.empty(len(names), dtype=int)
        rank[order] = np.arange(1, len(names) + 1)
        rows += [
            {
                "group": group.name,
                "a": first,
                "b": other,
                "image": name,
                "a_dice": float(a_mean[i]),
                "b_dice": float(b_mean[i]),
                "diff": float(diff[i]),
                "rank": int(rank[i]),
                "n_seeds": len(group.runs),
            }
            for i, name in enumerate(names)
        ]
    return rows
