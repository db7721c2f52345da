"""The preprocess stage: raw Oxford-IIIT Pet layout -> the uint8 tensor cache (see petseg.data.cache).

What it guarantees:

- only names in ``trainval.txt`` / ``test.txt`` are read (``._*`` files,
  ``.mat`` files and unlisted images are never opened);
- every broken file the real dataset has is handled, never crashed on: photos
  are read by petseg.data.imaging (a PNG/GIF named .jpg, palette, RGBA,
  grayscale, CMYK or 16-bit images become RGB); a missing, empty, unreadable
  or truncated image or trimap, a trimap that is not 8-bit or holds values
  outside {1, 2, 3}, and an image/trimap size mismatch are skipped. Each
  conversion and skip lands in ``report.json`` with the name, the split and
  the reason;
- images are resized bilinear, trimaps nearest; mask = trimap != 2; no EXIF
  rotation (trimaps are in stored pixel order, like torchvision's loader);
- decoding runs on all cores, JPEGs decode at a reduced scale (draft mode)
  when the target is at most half their size, and rows stream to disk in
  small buffers, so memory stays flat whatever the dataset size;
- every output is written to a temporary file and all are renamed into place
  only after every split succeeded, so a failure leaves the old cache whole.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from petseg.data.cache import LABELS_FILE, labels_text, split_dir
from petseg.data.decode import Task, decoded_results
from petseg.data.layout import (
    IMAGES_DIR,
    TEST_LIST,
    TRAINVAL_LIST,
    TRIMAPS_DIR,
    ListEntry,
    check_layout,
    image_path,
    read_list,
    trimap_path,
)
from petseg.data.rows import NpyRows
from petseg.data.splits import SPLITS, split_names
from petseg.errors import DataError
from petseg.io import atomic_path, remove_stale_temps, write_error
from petseg.system import usable_cpus

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _cache_writes(cache_dir: Path) -> Iterator[None]:
    """Turn an OSError while the cache is being filled (disk full, quota) into an OutputError naming the cache."""
    try:
        yield
    except OSError as exc:
        raise write_error(cache_dir, exc) from None


@dataclass
class PreprocessResult:
    """What a preprocess run produced (the same facts as report.json)."""

    cache_dir: Path
    report: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        return self.report["counts"]

    def summary(self) -> str:
        """One line for the log: cached counts per split, conversions and skips."""
        counts, listed = self.report["counts"], self.report["listed"]
        per_split = ", ".join(f"{split} {counts[split]}" for split in SPLITS)
        return (
            f"preprocess: cached {sum(counts.values())} of {sum(listed.values())} listed pairs at "
            f"{self.report['image_size']}x{self.report['image_size']} ({per_split}); "
            f"{len(self.report['converted'])} converted, {len(self.report['skipped'])} skipped; "
            f"details in {self.cache_dir / 'report.json'}"
        )


def _count_unlisted(directory: Path, listed: set[str], suffix: str) -> int:
    """Files in ``directory`` that preprocessing ignores (never opened): unlisted, ._*, .mat, ..."""
    try:
        with os.scandir(directory) as entries:
            return sum(1 for e in entries if not (e.name.endswith(suffix) and e.name[: -len(suffix)] in listed))
    except OSError:
        return 0


def _planned_names(
    raw_dir: Path, split: str, val_every: int, fractions: Sequence[float], seed: int
) -> tuple[dict[str, list[str]], dict[str, ListEntry]]:
    """The names of each split, and every listed entry by name; a malformed or overlapping list is a DataError."""
    check_layout(raw_dir)
    entries = {entry.name: entry for entry in read_list(raw_dir / TRAINVAL_LIST)}
    trainval = list(entries)
    test = [entry.name for entry in read_list(raw_dir / TEST_LIST)]
    overlap = sorted(set(trainval) & set(test))
    if overlap:
        raise DataError(f"{raw_dir / TEST_LIST}: {len(overlap)} name(s) also in trainval.txt, e.g. {overlap[0]}")
    names = split_names(trainval, test, split=split, val_every=val_every, fractions=fractions, seed=seed)
    for name in SPLITS:
        if not names[name]:
            raise DataError(
                f"{raw_dir}: the {name} split is empty ({len(trainval)} trainval and {len(test)} test names listed)"
            )
    entries.update({entry.name: entry for entry in read_list(raw_dir / TEST_LIST)})
    return names, entries


def preprocess(
    raw_dir: str | Path,
    cache_dir: str | Path,
    *,
    image_size: int,
    split: str = "official",
    val_every: int = 10,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    workers: int = 0,
    jpeg_draft: bool = True,
    progress: bool = True,
) -> PreprocessResult:
    """Build the tensor cache in ``cache_dir`` from the raw layout in ``raw_dir``; see the module docstring.

    ``workers`` decoding processes (0 = one per CPU core, 1 = in this process).
    Raises DataError for a missing layout, a malformed list line (naming file
    and line) or a split left empty.
    """
    raw_dir, cache_dir = Path(raw_dir), Path(cache_dir)
    names, listed = _planned_names(raw_dir, split, val_every, split_fractions, seed)
    unlabelled = sorted(name for name, entry in listed.items() if entry.species is None or entry.breed is None)
    if unlabelled:
        log.info(
            "note: %d listed name(s) have no species or breed (e.g. %s): their per-species and per-breed "
            "scores are left out",
            len(unlabelled),
            unlabelled[0],
        )
    planned = [(name, row, item) for name in SPLITS for row, item in enumerate(names[name])]
    tasks = [
        Task(
            index,
            name,
            row,
            item,
            str(image_path(raw_dir, item)),
            str(trimap_path(raw_dir, item)),
            image_size,
            jpeg_draft,
        )
        for index, (name, row, item) in enumerate(planned)
    ]
    workers = workers or usable_cpus()
    chunk = max(1, min(16, len(tasks) // (workers * 8)))

    for name in SPLITS:
        remove_stale_temps(split_dir(cache_dir, name))
    remove_stale_temps(cache_dir)
    converted: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    kept: dict[str, list[bool]] = {name: [] for name in SPLITS}
    side = (image_size, image_size)
    with contextlib.ExitStack() as stack:
        # Entered first, so renamed last: the report appears only once every array is in place.
        report_temp = stack.enter_context(atomic_path(cache_dir / "report.json"))
        arrays: dict[str, list[NpyRows]] = {}
        names_temp: dict[str, Path] = {}
        labels_temp: dict[str, Path] = {}
        for name in SPLITS:
            directory = split_dir(cache_dir, name)
            names_temp[name] = stack.enter_context(atomic_path(directory / "names.txt"))
            labels_temp[name] = stack.enter_context(atomic_path(directory / LABELS_FILE))
            arrays[name] = [
                NpyRows(stack.enter_context(atomic_path(directory / f"{array}.npy")), len(names[name]), row_shape)
                for array, row_shape in (("images", (*side, 3)), ("masks", side), ("trimaps", side))
            ]
        targets = {name: tuple(rows.target for rows in arrays[name]) for name in SPLITS}
        # innermost: a failed write while filling the arrays (disk full) names the cache, not one array
        stack.enter_context(_cache_writes(cache_dir))

        bar = stack.enter_context(
            tqdm(total=len(tasks), desc="preprocess", unit="img", disable=not progress, leave=False)
        )
        for result in decoded_results(tasks, targets, workers, chunk):
            task = tasks[result.index]
            if result.skip is not None:
                skipped.append({"name": task.name, "split": task.split, "reason": result.skip})
            elif result.notes:
                converted.append({"name": task.name, "split": task.split, "reason": "; ".join(result.notes)})
            kept[task.split].append(result.skip is None)
            bar.update(1)

        for name in SPLITS:
            if not any(kept[name]):
                first = next(entry for entry in skipped if entry["split"] == name)
                raise DataError(
                    f"{raw_dir}: all {len(names[name])} {name} pairs were skipped, leaving the {name} split empty; "
                    f"e.g. {first['name']}: {first['reason']}"
                )
            for rows in arrays[name]:
                rows.compact(kept[name])
            kept_names = [item for item, keep in zip(names[name], kept[name]) if keep]
            names_temp[name].write_text("".join(item + "\n" for item in kept_names), encoding="utf-8")
            labels_temp[name].write_text(labels_text([listed[item] for item in kept_names]), encoding="utf-8")

        options = (
            {"val_every": val_every}
            if split == "official"
            else {"split_fractions": list(split_fractions), "seed": seed}
        )
        report = {
            "source": str(raw_dir),
            "image_size": image_size,
            "split": split,
            **options,
            "jpeg_draft": jpeg_draft,
            "listed": {name: len(names[name]) for name in SPLITS},
            "counts": {name: sum(kept[name]) for name in SPLITS},
            "ignored_files": {
                "images": _count_unlisted(raw_dir / IMAGES_DIR, listed, ".jpg"),
                "trimaps": _count_unlisted(raw_dir / TRIMAPS_DIR, listed, ".png"),
            },
            "converted": converted,
            "skipped": skipped,
        }
        report_temp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for entry in converted:
        log.debug("converted %s (%s): %s", entry["name"], entry["split"], entry["reason"])
    for entry in skipped:
        log.info("skipped %s (%s): %s", entry["name"], entry["split"], entry["reason"])
    return PreprocessResult(cache_dir, report)
