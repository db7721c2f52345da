"""The preprocessed tensor cache: layout, loading and a content fingerprint.

``data/cache/<split>/`` holds, for each split ``train``, ``val`` and ``test``:

- ``images.npy``  N x H x W x 3 uint8 (RGB)
- ``masks.npy``   N x H x W uint8, 1 = pet (trimap 1 or 3), 0 = background (trimap 2)
- ``trimaps.npy`` N x H x W uint8, the original values 1/2/3
- ``names.txt``   one image name per line, in the same order
- ``labels.csv``  ``name,class_id,species,breed_id`` of each image from the split lists, in the
  same order (a field is empty where the list line has no such column)

Arrays are memory-mapped on load, so opening a split costs nothing and
batches are built by indexing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petseg.data.layout import ListEntry
from petseg.data.splits import SPLITS
from petseg.errors import DataError
from petseg.io import load_npy, read_table

__all__ = ["ARRAYS", "LABELS_FILE", "SPLITS", "Split", "fingerprint", "labels_text", "load_split", "split_dir"]

LABELS_FILE = "labels.csv"
LABEL_COLUMNS = ("name", "class_id", "species", "breed_id")

ARRAYS = ("images", "masks", "trimaps")
REPAIR = "re-create the cache with dvc repro preprocess"


@dataclass(frozen=True)
class Split:
    """One split of the cache: aligned arrays and names."""

    directory: Path
    images: np.ndarray
    masks: np.ndarray
    trimaps: np.ndarray
    names: list[str]
    labels: list[ListEntry] | None = None  # None for a cache written before labels were kept

    def __len__(self) -> int:
        return len(self.names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


def split_dir(cache_dir: str | Path, split: str) -> Path:
    return Path(cache_dir) / split


def load_split(cache_dir: str | Path, split: str, *, mmap: bool = True) -> Split:
    """Open one split, checking that its files exist, are whole and agree with each other."""
    directory = split_dir(cache_dir, split)
    if not directory.is_dir():
        raise DataError(f"{directory}: cache split not found; run the preprocess stage (dvc repro preprocess)")
    try:
        images = load_npy(directory / "images.npy", mmap=mmap, dtype=np.uint8, ndim=4)
        masks = load_npy(directory / "masks.npy", mmap=mmap, dtype=np.uint8, ndim=3)
        trimaps = load_npy(directory / "trimaps.npy", mmap=mmap, dtype=np.uint8, ndim=3)
    except DataError as exc:
        raise DataError(f"{exc}; {REPAIR}") from None
    names_path = directory / "names.txt"
    try:
        names = names_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{names_path}: file not found; {REPAIR}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{names_path}: cannot read: {exc}; {REPAIR}") from None

    n, height, width, channels = images.shape
    if channels != 3 or height != width:
        raise DataError(
            f"{directory / 'images.npy'}: expected N x S x S x 3 images, found shape {images.shape}; {REPAIR}"
        )
    for label, array in (("masks.npy", masks), ("trimaps.npy", trimaps)):
        if array.shape != (n, height, width):
            raise DataError(
                f"{directory / label}: shape {array.shape} does not match images.npy {images.shape}; "
                f"the cache is inconsistent; {REPAIR}"
            )
    if len(names) != n:
        raise DataError(f"{names_path}: {len(names)} names for {n} images; the cache is inconsistent; {REPAIR}")
    return Split(directory, images, masks, trimaps, names, _read_labels(directory / LABELS_FILE, names))


def labels_text(entries: list[ListEntry]) -> str:
    """The content of ``labels.csv`` for these entries (in cache order)."""
    rows = [",".join(LABEL_COLUMNS)]
    rows += [
        ",".join("" if v is None else str(v) for v in (e.name, e.class_id, e.species, e.breed_id)) for e in entries
    ]
    return "\n".join(rows) + "\n"


def _read_labels(path: Path, names: list[str]) -> list[ListEntry] | None:
    if not path.is_file():
        return None
    rows = read_table(path, ",", "preprocess", "the labels table")
    try:
        entries = [
            ListEntry(row["name"], *(int(row[key]) if row[key] else None for key in LABEL_COLUMNS[1:])) for row in rows
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: not a labels table with columns {','.join(LABEL_COLUMNS)} ({exc!r}); {REPAIR}"
        ) from None
    if [entry.name for entry in entries] != names:
        raise DataError(f"{path}: its names differ from names.txt; the cache is inconsistent; {REPAIR}")
    return entries


def fingerprint(splits: list[Split] | tuple[Split, ...]) -> str:
    """A content hash of the given splits (arrays and names), to tell whether a checkpoint's data changed."""
    digest = hashlib.blake2b(digest_size=16)
    chunk_rows = 256
    for split in splits:
        digest.update(split.directory.name.encode())
        digest.update("\n".join(split.names).encode())
        for array in (split.images, split.masks, split.trimaps):
            digest.update(str(array.shape).encode())
            for start in range(0, len(array), chunk_rows):
                digest.update(np.ascontiguousarray(array[start : start + chunk_rows]).data)
    return digest.hexdigest()
