"""The models' metrics side by side, a metric per row (``python -m stages.compare --table [--against REV]``).

``dvc metrics show`` puts every key of every metrics file in one row per
revision, far wider than a terminal; this transposes ``metrics/<model>.json``:
one row per metric, one column per model (and per model at REV).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petseg import paths
from petseg.compare.revisions import read_text_at
from petseg.errors import DataError
from petseg.models import label


def _load(text: str, source: str) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: not valid JSON ({exc.msg}); re-run evaluate") from None
    if not isinstance(values, dict):
        raise DataError(f"{source}: not a metrics file (a JSON object); re-run evaluate")
    return values


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def metrics_table(models: Sequence[str], *, against: str | None = None, repo: str | Path = ".") -> str:
    """The table as text; a model whose metrics file is missing here is a DataError naming it."""
    repo = Path(repo)
    columns: list[tuple[str, dict[str, Any]]] = []
    for model in models:
        path = paths.metrics_file(model)
        try:
            text = (repo / path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"{path}: not found; run dvc repro (or pass --models)") from None
        columns.append((label(model), _load(text, str(path))))
        if against is not None:
            columns.append(
                (f"{label(model)} @ {against}", _load(read_text_at(against, path, repo), f"{path} at {against}"))
            )
    keys: list[str] = []
    for _, values in columns:
        keys += [key for key in values if key not in keys and not isinstance(values[key], (dict, list))]
    rows = [["metric", *(name for name, _ in columns)]]
    rows += [[key, *(_cell(values[key]) if key in values else "-" for _, values in columns)] for key in keys]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
