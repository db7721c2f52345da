"""Decoding the raw pairs for the preprocess stage, on every core: one image and trimap in, one cache row out.

Workers decode, check and resize each pair with petseg.data.imaging and write its rows straight
into the cache's memory-mapped arrays; results come back in task order, with a bounded number
of chunks in flight so memory stays flat.
"""

from __future__ import annotations

import collections
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from petseg.data import imaging
from petseg.data.rows import RowTarget, RowWriter


@dataclass(frozen=True)
class Task:
    index: int  # position in the whole run (results come back in this order)
    split: str
    row: int  # position in the split's arrays
    name: str
    image_file: str
    trimap_file: str
    size: int
    jpeg_draft: bool


@dataclass
class Result:
    index: int
    notes: list[str] = field(default_factory=list)
    skip: str | None = None


# split -> (images, masks, trimaps) targets
Targets = dict[str, tuple[RowTarget, ...]]


def load_pair(task: Task) -> tuple[Result, tuple[np.ndarray, np.ndarray] | None]:
    """Decode, check and resize one image/trimap pair: (result, (RGB pixels, trimap pixels) or None when skipped).

    Both files are checked before either is decoded, so a missing trimap never costs a decode.
    """
    result = Result(task.index)
    what = "image"
    try:
        imaging.check_file(Path(task.image_file))
        what = "trimap"
        imaging.check_file(Path(task.trimap_file))
        what = "image"
        photo = imaging.read_photo(task.image_file, draft_size=task.size if task.jpeg_draft else None)
        what = "trimap"
        trimap = imaging.read_trimap(task.trimap_file, photo.stored_size)
    except imaging.UnusableFile as problem:
        result.skip = f"{what}: {problem}"
        return result, None
    result.notes = photo.notes
    return result, (imaging.photo_pixels(photo.rgb, task.size), imaging.trimap_pixels(trimap, task.size))


def load_chunk(targets: Targets, tasks: list[Task]) -> list[Result]:
    """Decode a chunk of pairs and write their rows in place (runs in a worker process)."""
    results: list[Result] = []
    with RowWriter() as writer:
        for task in tasks:
            result, pixels = load_pair(task)
            if pixels is not None:
                image, trimap = pixels
                writer.write(targets[task.split], task.row, (image, imaging.pet_mask(trimap), trimap))
            results.append(result)
    return results


def decoded_results(tasks: list[Task], targets: Targets, workers: int, chunk: int) -> Iterator[Result]:
    """Results in task order, from ``workers`` processes with a bounded number of chunks in flight."""
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        for part in chunks:
            yield from load_chunk(targets, part)
        return
    with multiprocessing.get_context().Pool(min(workers, len(chunks))) as pool:
        pending: collections.deque = collections.deque()
        upcoming = iter(chunks)
        for part in upcoming:
            pending.append(pool.apply_async(load_chunk, (targets, part)))
            if len(pending) >= 4 * workers:
                break
        while pending:
            done = pending.popleft().get()
            next_part = next(upcoming, None)
            if next_part is not None:
                pending.append(pool.apply_async(load_chunk, (targets, next_part)))
            yield from done
