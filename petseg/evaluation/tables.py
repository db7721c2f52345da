"""The per-image table of the evaluate stage: ``plots/evaluate/<model>.csv``.

Columns ``name,dice,iou``, one row per test image in cache order; floats are
written with ``repr`` so they read back exactly. The plot stage charts it and
the comparison against another revision reads it from git.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petseg.errors import DataError
from petseg.io import read_table, write_text

COLUMNS = ("name", "dice", "iou")


def write_per_image_csv(path: str | Path, names: Sequence[str], dice: np.ndarray, iou: np.ndarray) -> None:
    """Write the per-image table atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for name, d, i in zip(names, dice, iou):
        writer.writerow([name, repr(float(d)), repr(float(i))])
    write_text(path, buffer.getvalue())


def read_per_image_csv(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read a per-image table: names, Dice and IoU; a bad file is a DataError naming it."""
    path = Path(path)
    rows = read_table(path, ",", "evaluate", "the per-image table")
    try:
        names = [row["name"] for row in rows]
        dice = np.array([float(row["dice"]) for row in rows], dtype=np.float64)
        iou = np.array([float(row["iou"]) for row in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a per-image table with columns name,dice,iou ({exc!r}); re-run evaluate") from None
    if len(rows) == 0:
        raise DataError(f"{path}: the per-image table is empty; re-run evaluate")
    for label, scores in (("dice", dice), ("iou", iou)):
        if not np.all((scores >= 0.0) & (scores <= 1.0)):  # also false for NaN
            raise DataError(f"{path}: {label} values outside [0, 1]; re-run evaluate")
    return names, dice, iou
