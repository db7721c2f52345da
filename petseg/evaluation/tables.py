"""The tables of the evaluate stage, in git beside the metrics so that commits and experiments compare.

- ``plots/evaluate/<model>.csv``: one row per test image in cache order, columns
  ``name,breed,species,dice,iou,dice_ignore_border,boundary_iou`` (breed and
  species empty where the split list gives none). Floats are written with
  ``repr`` so they read back exactly. The plot stage charts it; the compare
  stage and ``python -m stages.compare --against REV`` pair its rows by name.
- ``plots/evaluate/<model>_by_breed.csv``: ``breed,species,n,dice_mean,dice_median``,
  one row per breed in the official class order.
- ``plots/evaluate/<model>_worst.npy``: the predicted masks of the ``evaluate.n_worst``
  lowest-Dice test images (:func:`worst_indices` of the per-image table, worst first),
  ``np.packbits`` along each row; the plot stage draws the gallery from it, the
  per-image table and the test cache.

Tables written before the boundary and border columns existed (``name,dice,iou``)
still read: the missing columns are absent from :attr:`PerImage.scores`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from petseg.errors import DataError
from petseg.io import load_npy, parse_table, read_table, save_npy, write_text

SCORES = ("dice", "iou", "dice_ignore_border", "boundary_iou")  # per-image scores, each in [0, 1]
COLUMNS = ("name", "breed", "species", *SCORES)
BREED_COLUMNS = ("breed", "species", "n", "dice_mean", "dice_median")


@dataclass
class PerImage:
    """One model's per-image results: names, optional breed and species, and each score as an array."""

    names: list[str]
    scores: dict[str, np.ndarray]
    breeds: list[str | None] = field(default_factory=list)
    species: list[str | None] = field(default_factory=list)


def csv_text(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A CSV table (comma-separated, ``\\n`` line ends) with its header line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_per_image_csv(path: str | Path, table: PerImage) -> None:
    """Write the per-image table atomically."""
    rows = [
        [name, breed or "", species or "", *(repr(float(table.scores[key][i])) for key in SCORES)]
        for i, (name, breed, species) in enumerate(zip(table.names, table.breeds, table.species))
    ]
    write_text(path, csv_text(rows, COLUMNS))


def read_per_image_csv(path: str | Path, stage: str = "evaluate") -> PerImage:
    """Read a per-image table; a bad file is a DataError naming it (and the stage that writes it)."""
    return per_image_from_rows(read_table(path, ",", stage, "the per-image table"), str(path), stage)


def parse_per_image_csv(text: str, source: str, stage: str = "evaluate") -> PerImage:
    """A per-image table from its text (e.g. read from git at another revision); ``source`` names it in errors."""
    return per_image_from_rows(parse_table(text, ",", source, stage, "the per-image table"), source, stage)


def per_image_from_rows(rows: list[dict[str, str]], path: str, stage: str) -> PerImage:
    if not rows:
        raise DataError(f"{path}: the per-image table is empty; re-run {stage}")
    present = [key for key in SCORES if key in rows[0]]
    try:
        names = [row["name"] for row in rows]
        scores = {key: np.array([float(row[key]) for row in rows], dtype=np.float64) for key in present}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a per-image table with columns name,dice,... ({exc!r}); re-run {stage}") from None
    if "dice" not in scores:
        raise DataError(f"{path}: not a per-image table (no dice column); re-run {stage}")
    for key, values in scores.items():
        if not np.all((values >= 0.0) & (values <= 1.0)):  # also false for NaN
            raise DataError(f"{path}: {key} values outside [0, 1]; re-run {stage}")
    breeds = [row.get("breed") or None for row in rows]
    species = [row.get("species") or None for row in rows]
    return PerImage(names, scores, breeds, species)


def write_breed_csv(path: str | Path, rows: Sequence[dict[str, object]]) -> None:
    """Write the per-breed table (rows with the BREED_COLUMNS keys) atomically."""
    write_text(
        path,
        csv_text(
            [
                [row[key] if not isinstance(row[key], float) else repr(row[key]) for key in BREED_COLUMNS]
                for row in rows
            ],
            BREED_COLUMNS,
        ),
    )


def read_breed_csv(path: str | Path) -> list[dict[str, object]]:
    """Read a per-breed table (numbers as numbers)."""
    path = Path(path)
    try:
        return [
            {
                "breed": row["breed"],
                "species": row["species"],
                "n": int(row["n"]),
                "dice_mean": float(row["dice_mean"]),
                "dice_median": float(row["dice_median"]),
            }
            for row in read_table(path, ",", "evaluate", "the per-breed table")
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: not a per-breed table with columns {','.join(BREED_COLUMNS)} ({exc!r}); re-run evaluate"
        ) from None


def worst_indices(dice: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` lowest Dice scores, worst first; ties keep cache order."""
    return np.argsort(dice, kind="stable")[: max(0, min(n, len(dice)))]


def write_worst_masks(path: str | Path, masks: np.ndarray) -> None:
    """Write the worst images' predicted masks (bool K x H x W, worst first); none removes the file."""
    path = Path(path)
    if len(masks) == 0:
        path.unlink(missing_ok=True)
        return
    save_npy(path, np.packbits(np.asarray(masks, dtype=bool), axis=-1))


def read_worst_masks(path: str | Path, width: int) -> np.ndarray | None:
    """The masks :func:`write_worst_masks` wrote (bool K x H x ``width``), or None when there is no file."""
    path = Path(path)
    if not path.exists():
        return None
    packed = load_npy(path, mmap=False, dtype=np.uint8, ndim=3)
    if packed.shape[-1] != (width + 7) // 8:
        raise DataError(f"{path}: masks of another width than the {width}px test cache; re-run evaluate")
    return np.unpackbits(packed, axis=-1, count=width).astype(bool)
