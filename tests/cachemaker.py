"""Write small tensor caches straight to disk for tests of training, evaluation and inference.

The images hold one textured ellipse (the "pet") on a textured background, so
a model can learn them in a few epochs; masks and trimaps follow the cache
layout of petseg.data.cache exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
    return images, masks, trimaps


def write_cache(cache_dir: Path, sizes: dict[str, int], image_size: int = 32, seed: int = 0) -> Path:
    """Write ``cache_dir/<split>/{images,masks,trimaps}.npy`` and ``names.txt`` for each split."""
    for offset, (split, n) in enumerate(sizes.items()):
        directory = Path(cache_dir) / split
        directory.mkdir(parents=True, exist_ok=True)
        images, masks, trimaps = make_arrays(n, image_size, seed + 1000 * offset)
        np.save(directory / "images.npy", images)
        np.save(directory / "masks.npy", masks)
        np.save(directory / "trimaps.npy", trimaps)
        (directory / "names.txt").write_text("".join(f"{split}_{i}\n" for i in range(n)))
    return Path(cache_dir)
