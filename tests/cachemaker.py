"""Write small tensor caches straight to disk for tests of training, evaluation and inference.

The images hold one textured ellipse (the "pet") on a textured background, so
a model can learn them in a few epochs; masks and trimaps (with a boundary band
of 3 around the pet, as real trimaps have) and labels follow the cache layout
of petseg.data.cache exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petseg.data.cache import labels_text
from petseg.data.layout import ListEntry, breeds


def make_arrays(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.15, 0.3, 2) * size
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        background = rng.integers(0, 256, 3) * 0.6 + rng.normal(0, 25, (size, size, 3))
        stripes = (np.sin(xx * rng.uniform(0.5, 1.0) + yy * 0.3)[..., None] > 0) * 80.0
        pet = rng.integers(0, 256, 3) * 0.6 + stripes + rng.normal(0, 10, (size, size, 3))
        images[i] = np.clip(np.where(inside[..., None], pet, background), 0, 255).astype(np.uint8)
        masks[i] = inside
    trimaps = np.where(masks == 1, 1, 2).astype(np.uint8)
    inner = masks.astype(bool)
    inner[:, 1:-1, 1:-1] &= inner[:, :-2, 1:-1] & inner[:, 2:, 1:-1] & inner[:, 1:-1, :-2] & inner[:, 1:-1, 2:]
    trimaps[(masks == 1) & ~inner] = 3  # the pet's outermost pixels: the boundary band, pet in the mask
    return images, masks, trimaps


def labels(names: list[str]) -> list[ListEntry]:
    """Split-list labels for the names: breeds taken in turn from the official 37 (so cats and dogs both occur)."""
    table = breeds()
    return [
        ListEntry(name, b.class_id, b.species, b.breed_id)
        for name, b in zip(names, (table[i % 7 * 5] for i in range(len(names))))
    ]


def write_cache(
    cache_dir: Path, sizes: dict[str, int], image_size: int = 32, seed: int = 0, with_labels: bool = True
) -> Path:
    """Write ``cache_dir/<split>/{images,masks,trimaps}.npy``, ``names.txt`` and ``labels.csv`` for each split."""
    for offset, (split, n) in enumerate(sizes.items()):
        directory = Path(cache_dir) / split
        directory.mkdir(parents=True, exist_ok=True)
        images, masks, trimaps = make_arrays(n, image_size, seed + 1000 * offset)
        np.save(directory / "images.npy", images)
        np.save(directory / "masks.npy", masks)
        np.save(directory / "trimaps.npy", trimaps)
        names = [f"{split}_{i}" for i in range(n)]
        (directory / "names.txt").write_text("".join(f"{name}\n" for name in names))
        if with_labels:
            (directory / "labels.csv").write_text(labels_text(labels(names)))
    return Path(cache_dir)
