"""The preprocess stage: raw Oxford-IIIT Pet layout -> the uint8 tensor cache (see petseg.data.cache).

What it guarantees:

- only names in ``trainval.txt`` / ``test.txt`` are read (``._*`` files,
  ``.mat`` files and unlisted images are never opened);
- every broken file the real dataset has is handled, never crashed on: a
  PNG/GIF named .jpg, palette, RGBA, grayscale, CMYK or 16-bit images are
  converted to RGB; a missing, empty, unreadable or truncated image or trimap,
  a trimap that is not 8-bit (L/P) or holds values outside {1, 2, 3}, and an
  image/trimap size mismatch are skipped. Each conversion and skip lands in
  ``report.json`` with the name, the split and the reason;
- images are resized bilinear, trimaps nearest; mask = trimap != 2; no EXIF
  rotation (trimaps are in stored pixel order, like torchvision's loader);
- decoding runs on all cores, JPEGs decode at a reduced scale (draft mode)
  when the target is at most half their size, and rows stream to disk in
  small buffers, so memory stays flat whatever the dataset size;
- every output is written to a temporary file and all are renamed into place
  only after every split succeeded, so a failure leaves the old cache whole.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import json
import logging
import multiprocessing
import os
import shutil
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from petseg.data.cache import SPLITS, split_dir
from petseg.data.layout import (
    IMAGES_DIR,
    TEST_LIST,
    TRAINVAL_LIST,
    TRIMAPS_DIR,
    check_layout,
    image_path,
    read_list,
    trimap_path,
    usable_cpus,
)
from petseg.errors import DataError, ParamsError
from petseg.io import atomic_path, remove_stale_temps, write_error

log = logging.getLogger(__name__)

TRIMAP_VALUES = (1, 2, 3)
BACKGROUND = 2


# --------------------------------------------------------------------- splits


def split_names(
    trainval: list[str],
    test: list[str],
    *,
    split: str = "official",
    val_every: int = 10,
    fractions: tuple[float, float, float] | list[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Assign listed names to train/val/test.

    ``official``: every ``val_every``-th trainval name, counting from the first
    (indices 0, val_every, 2*val_every, ...), is validation, the other trainval
    names are train, and test.txt is test. ``random``: all listed names
    (trainval then test) are shuffled with ``seed`` and cut by ``fractions``
    (train, val, test), rounding the train and val counts.
    """
    if split == "official":
        if val_every < 2:
            raise ParamsError(f"data.val_every = {val_every!r} is invalid; allowed: an integer >= 2")
        return {
            "train": [name for i, name in enumerate(trainval) if i % val_every],
            "val": trainval[::val_every],
            "test": list(test),
        }
    if split == "random":
        if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
            raise ParamsError(
                f"data.split_fractions = {list(fractions)!r} is invalid; three positive fractions summing to 1"
            )
        names = list(trainval) + list(test)
        order = np.random.default_rng(seed).permutation(len(names))
        n_train = round(fractions[0] * len(names))
        n_val = round(fractions[1] * len(names))
        shuffled = [names[i] for i in order]
        return {
            "train": shuffled[:n_train],
            "val": shuffled[n_train : n_train + n_val],
            "test": shuffled[n_train + n_val :],
        }
    raise ParamsError(f"data.split = {split!r} is invalid; allowed: one of official, random")


# -------------------------------------------------------------------- writing


class NpyRows:
    """A uint8 .npy file of fixed-shape rows, written in place by row number, then compacted.

    It is created at full capacity with ``np.lib.format.open_memmap`` (a sparse
    file: no memory, no disk blocks until written). Decoding workers write
    each row straight to its place with ``os.pwrite`` (no arrays travel back
    to the parent, and no process keeps the data mapped, so memory does not
    grow with the dataset). ``compact`` then moves the kept rows together over
    the skipped ones, in chunks, cuts the file and rewrites the header's row count.
    """

    def __init__(self, path: Path, capacity: int, row_shape: tuple[int, ...]):
        self.path, self.capacity, self.row_shape = Path(path), capacity, row_shape
        array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=(capacity, *row_shape))
        self.offset = int(array.offset)
        del array
        self.row_bytes = int(np.prod(row_shape))

    @property
    def target(self) -> tuple[str, int, int]:
        """What a worker needs to write rows: (path, header size, bytes per row)."""
        return str(self.path), self.offset, self.row_bytes

    def compact(self, kept: list[bool]) -> int:
        """Keep only the rows flagged in ``kept`` (in order); fix the header and the file size; return the row count."""
        if len(kept) != self.capacity:
            raise ValueError(f"{self.path}: {len(kept)} flags for {self.capacity} rows")
        rows = int(sum(kept))
        block_rows = max(1, (16 << 20) // self.row_bytes)
        with open(self.path, "r+b") as handle:
            fd, destination, start = handle.fileno(), 0, 0
            while start < self.capacity:
                if not kept[start]:
                    start += 1
                    continue
                end = start
                while end < self.capacity and kept[end]:
                    end += 1
                if start != destination:  # destination < start: copying forward never overwrites unread rows
                    for first in range(start, end, block_rows):
                        count = min(block_rows, end - first)
                        data = os.pread(fd, count * self.row_bytes, self.offset + first * self.row_bytes)
                        os.pwrite(fd, data, self.offset + (destination + first - start) * self.row_bytes)
                destination += end - start
                start = end
            handle.truncate(self.offset + rows * self.row_bytes)
            header = _npy_header((rows, *self.row_shape))
            if len(header) == self.offset:
                os.pwrite(fd, header, 0)
                return rows
        # The header length changed (numpy pads it so this should not happen): copy behind a new header.
        copy = self.path.with_name(self.path.name + ".rows")
        with open(self.path, "rb") as source, open(copy, "wb") as target:
            target.write(header)
            source.seek(self.offset)
            shutil.copyfileobj(source, target, 16 << 20)
        os.replace(copy, self.path)
        return rows


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


# ------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _Task:
    index: int  # position in the whole run (results come back in this order)
    split: str
    row: int  # position in the split's arrays
    name: str
    image_file: str
    trimap_file: str
    size: int
    jpeg_draft: bool


@dataclass
class _Result:
    index: int
    notes: list[str] = field(default_factory=list)
    skip: str | None = None


# split -> (images, masks, trimaps) targets, each (path, header size, bytes per row)
_Targets = dict[str, tuple[tuple[str, int, int], ...]]


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB, noting what was done."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("P", "PA"):
        notes.append(f"palette image (mode {mode}) converted to RGB")
    elif mode in ("RGBA", "RGBa", "LA", "La"):
        notes.append(f"{mode} image converted to RGB (alpha dropped)")
    elif mode == "L":
        notes.append("grayscale image (mode L) converted to RGB")
    elif mode == "1":
        notes.append("1-bit image converted to RGB")
    elif mode == "CMYK":
        notes.append("CMYK image converted to RGB")
    elif mode.startswith("I") or mode == "F":
        values = np.asarray(image)
        if mode.startswith("I;16") or (mode == "I" and values.size and values.max() > 255):
            values = values.astype(np.float32) / 257.0
            notes.append(f"16-bit image (mode {mode}) scaled to 8-bit RGB")
        else:
            notes.append(f"{mode} image converted to 8-bit RGB")
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    else:
        notes.append(f"{mode} image converted to RGB")
    return image.convert("RGB")


def _file_problem(path: Path, what: str, shown: str) -> str | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return f"{what} file missing: {shown}"
    except OSError as exc:
        return f"{what} file unreadable: {shown}: {exc.strerror or exc}"
    if not stat.S_ISREG(status.st_mode):
        return f"{what} is not a file: {shown}"
    if status.st_size == 0:
        return f"{what} file is empty (0 bytes)"
    return None


def _describe(exc: BaseException, path: Path) -> str:
    text = str(exc).replace(str(path), path.name)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_pair(task: _Task) -> tuple[_Result, np.ndarray | None, np.ndarray | None]:
    """Decode, check and resize one image/trimap pair: (result, RGB image, trimap), arrays None when skipped."""
    result = _Result(task.index)
    image_file, trimap_file = Path(task.image_file), Path(task.trimap_file)
    problem = _file_problem(image_file, "image", f"{IMAGES_DIR}/{image_file.name}") or _file_problem(
        trimap_file, "trimap", f"{TRIMAPS_DIR}/{trimap_file.name}"
    )
    if problem:
        result.skip = problem
        return result, None, None
    size = (task.size, task.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. odd EXIF or palette transparency: not our concern here
        try:
            with Image.open(image_file) as image:
                stored_size, kind = image.size, image.format
                if kind != "JPEG":
                    result.notes.append(f"{kind or 'unknown-format'} file named .jpg")
                if task.jpeg_draft and kind == "JPEG":
                    image.draft("RGB", size)  # decode at 1/2, 1/4 or 1/8 scale while both sides stay >= size
                image.load()
                resized = _to_rgb(image, result.notes).resize(size, Image.BILINEAR)
        except Exception as exc:  # noqa: BLE001 - every decoder failure is a skip with its reason
            result.notes.clear()
            result.skip = f"image unreadable: {_describe(exc, image_file)}"
            return result, None, None
        try:
            with Image.open(trimap_file) as trimap:
                if trimap.mode not in ("L", "P"):
                    result.skip = f"trimap mode {trimap.mode}, expected 8-bit L or P"
                    return result, None, None
                trimap.load()
                if trimap.size != stored_size:
                    result.skip = (
                        f"size mismatch: image {stored_size[0]}x{stored_size[1]}, "
                        f"trimap {trimap.size[0]}x{trimap.size[1]} (width x height)"
                    )
                    return result, None, None
                low, high = trimap.getextrema()
                if low < min(TRIMAP_VALUES) or high > max(TRIMAP_VALUES):
                    counts = np.bincount(np.asarray(trimap).ravel(), minlength=256)
                    counts[list(TRIMAP_VALUES)] = 0
                    bad = ", ".join(str(v) for v in np.flatnonzero(counts).tolist())
                    result.skip = f"trimap values outside {{1,2,3}}: {bad}"
                    return result, None, None
                small_trimap = trimap.resize(size, Image.NEAREST)
        except Exception as exc:  # noqa: BLE001
            result.skip = f"trimap unreadable: {_describe(exc, trimap_file)}"
            return result, None, None
    return result, np.asarray(resized, dtype=np.uint8), np.asarray(small_trimap, dtype=np.uint8)


def _load_chunk(targets: _Targets, tasks: list[_Task]) -> list[_Result]:
    """Decode a chunk of pairs and write their rows in place (runs in a worker process).

    Rows that follow each other in a split go to disk in one write per array.
    """
    results: list[_Result] = []
    fds: dict[str, int] = {}
    run: list[tuple[_Task, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []

    def flush() -> None:
        if not run:
            return
        first = run[0][0]
        for k, (path, offset, row_bytes) in enumerate(targets[first.split]):
            if path not in fds:
                fds[path] = os.open(path, os.O_WRONLY)
            buffers = [np.ascontiguousarray(rows[k]).data for _, rows in run]
            written = os.pwritev(fds[path], buffers, offset + first.row * row_bytes)
            if written != sum(buffer.nbytes for buffer in buffers):
                raise OSError(errno.ENOSPC, f"short write to {path}")
            if hasattr(os, "posix_fadvise"):  # start writing these rows back to disk now, while decoding goes on,
                os.posix_fadvise(fds[path], offset + first.row * row_bytes, written, os.POSIX_FADV_DONTNEED)  # not at the final fsync
        run.clear()

    try:
        for task in tasks:
            result, image, trimap = load_pair(task)
            if image is not None and trimap is not None:
                if run and (run[-1][0].split != task.split or run[-1][0].row + 1 != task.row):
                    flush()
                run.append((task, (image, (trimap != BACKGROUND).view(np.uint8), trimap)))
            results.append(result)
        flush()
    finally:
        for fd in fds.values():
            os.close(fd)
    return results


def _results(tasks: list[_Task], targets: _Targets, workers: int, chunk: int) -> Iterator[_Result]:
    """Results in task order, from ``workers`` processes with a bounded number of chunks in flight."""
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        for part in chunks:
            yield from _load_chunk(targets, part)
        return
    with multiprocessing.get_context().Pool(min(workers, len(chunks))) as pool:
        pending: collections.deque = collections.deque()
        upcoming = iter(chunks)
        for part in upcoming:
            pending.append(pool.apply_async(_load_chunk, (targets, part)))
            if len(pending) >= 4 * workers:
                break
        while pending:
            done = pending.popleft().get()
            next_part = next(upcoming, None)
            if next_part is not None:
                pending.append(pool.apply_async(_load_chunk, (targets, next_part)))
            yield from done


# --------------------------------------------------------------------- the stage


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
            return sum(
                1 for entry in entries if not (entry.name.endswith(suffix) and entry.name[: -len(suffix)] in listed)
            )
    except OSError:
        return 0


def preprocess(
    raw_dir: str | Path,
    cache_dir: str | Path,
    *,
    image_size: int,
    split: str = "official",
    val_every: int = 10,
    split_fractions: tuple[float, float, float] | list[float] = (0.8, 0.1, 0.1),
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
    if image_size < 1:
        raise ParamsError(f"data.image_size = {image_size!r} is invalid; allowed: a positive integer")
    check_layout(raw_dir)
    trainval = [entry.name for entry in read_list(raw_dir / TRAINVAL_LIST)]
    test = [entry.name for entry in read_list(raw_dir / TEST_LIST)]
    overlap = sorted(set(trainval) & set(test))
    if overlap:
        raise DataError(f"{raw_dir / TEST_LIST}: {len(overlap)} name(s) also in trainval.txt, e.g. {overlap[0]}")
    names = split_names(trainval, test, split=split, val_every=val_every, fractions=split_fractions, seed=seed)
    for name in SPLITS:
        if not names[name]:
            raise DataError(
                f"{raw_dir}: the {name} split is empty ({len(trainval)} trainval and {len(test)} test names listed)"
            )

    tasks: list[_Task] = []
    for name in SPLITS:
        for row, item in enumerate(names[name]):
            image_file, trimap_file = str(image_path(raw_dir, item)), str(trimap_path(raw_dir, item))
            tasks.append(_Task(len(tasks), name, row, item, image_file, trimap_file, image_size, jpeg_draft))
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
        for name in SPLITS:
            directory = split_dir(cache_dir, name)
            names_temp[name] = stack.enter_context(atomic_path(directory / "names.txt"))
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
        for result in _results(tasks, targets, workers, chunk):
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

        listed = set(trainval) | set(test)
        report = {
            "source": str(raw_dir),
            "image_size": image_size,
            "split": split,
            **(
                {"val_every": val_every}
                if split == "official"
                else {"split_fractions": list(split_fractions), "seed": seed}
            ),
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
