"""A deterministic, offline, pets-like dataset in the exact Oxford-IIIT Pet layout.

Why it exists: ``dvc repro`` must work anywhere with no network, in minutes, and
still compare two models meaningfully. So the images are built to be solvable
only from shape and texture, never from colour alone:

- pets, backgrounds, background distractors and occluders all take their
  surfaces from one texture generator (smooth noise, stripes, spots, gradients,
  blotches) over one shared palette, so every colour is as likely to be pet as
  background;
- pets are articulated (body, head, ears, snout, legs, tail, eyes) in several
  poses (standing, sitting, lying, close-up face), scales, rotations and
  mirrorings, and may run out of the frame;
- background distractors are smooth blobs, rectangles, rings and bars (never
  pet-shaped), sometimes wearing the pet's very texture, and sometimes the
  whole background does;
- an occluder (a post, a bar, a blob) often covers part of the pet: those
  pixels are background in the trimap, as in the real annotations;
- trimaps mark a boundary band (3) around the visible pet outline, as the
  real ones do.

Every image is drawn from its own seed ``(seed, index)``, so the output is
byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from petseg.data.layout import (
    IMAGES_DIR,
    TEST_LIST,
    TRAINVAL_LIST,
    TRIMAPS_DIR,
    ListEntry,
    breeds,
    building_dir,
    check_layout,
    image_path,
    trimap_path,
    write_list,
)
from petseg.data.synthetic.render import MAX_SIDE, MIN_SIDE, render
from petseg.system import usable_cpus

__all__ = ["MAX_SIDE", "MIN_SIDE", "generate", "plan", "render"]

log = logging.getLogger(__name__)


def plan(n_trainval: int, n_test: int, seed: int) -> tuple[list[ListEntry], list[ListEntry], dict[str, int]]:
    """Names and labels of the dataset: the trainval and test lists and each name's render index.

    Breeds are drawn uniformly; names are ``Breed_N`` numbered per breed as in
    the real set; each list is sorted by class and then name, as the real lists are.
    """
    rng = np.random.default_rng([seed, 0])
    table = breeds()
    counters = {breed.name: 0 for breed in table}
    entries, index_of = [], {}
    for index, choice in enumerate(rng.integers(0, len(table), size=n_trainval + n_test)):
        breed = table[int(choice)]
        counters[breed.name] += 1
        name = f"{breed.name}_{counters[breed.name]}"
        entries.append(ListEntry(name, breed.class_id, breed.species, breed.breed_id))
        index_of[name] = index

    def order(entry: ListEntry) -> tuple[int, str]:
        return entry.class_id, entry.name

    return sorted(entries[:n_trainval], key=order), sorted(entries[n_trainval:], key=order), index_of


# ------------------------------------------------------------------ textures


@dataclass(frozen=True)
class _Job:
    raw_dir: str
    seed: int
    index: int
    name: str
    species: int
    breed_id: int


def _write_one(job: _Job) -> str:
    image, trimap = render(job.seed, job.index, job.species, job.breed_id)
    quality = int(np.random.default_rng([job.seed, 2, job.index]).integers(80, 96))
    Image.fromarray(image).save(image_path(job.raw_dir, job.name), format="JPEG", quality=quality)
    Image.fromarray(trimap).save(trimap_path(job.raw_dir, job.name), format="PNG")
    return job.name


def generate(
    raw_dir: str | Path,
    n_trainval: int,
    n_test: int,
    seed: int,
    *,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Write the synthetic dataset to ``raw_dir`` in the official layout; return ``raw_dir``.

    Built in a temporary sibling folder and renamed into place when complete.
    ``workers`` processes render in parallel (0 = one per CPU core); the bytes
    written do not depend on it.
    """
    raw_dir = Path(raw_dir)
    trainval, test, index_of = plan(n_trainval, n_test, seed)
    workers = workers or usable_cpus()
    total = n_trainval + n_test
    with building_dir(raw_dir) as temp:
        (temp / IMAGES_DIR).mkdir()
        (temp / TRIMAPS_DIR).mkdir(parents=True)
        jobs = [_Job(str(temp), seed, index_of[e.name], e.name, e.species, e.breed_id) for e in trainval + test]
        bar = tqdm(total=total, desc="synthetic", unit="img", disable=not progress, leave=False)
        with bar:
            if workers == 1 or total < 32:
                for job in jobs:
                    bar.update(len(_write_one(job)) and 1)
            else:
                with multiprocessing.get_context().Pool(min(workers, total)) as pool:
                    for _ in pool.imap_unordered(_write_one, jobs, chunksize=8):
                        bar.update(1)
        write_list(temp / TRAINVAL_LIST, trainval)
        write_list(temp / TEST_LIST, test)
        check_layout(temp, "synthetic data")
    log.info("synthetic: %d trainval + %d test images (seed %d) in %s", n_trainval, n_test, seed, raw_dir)
    return raw_dir
