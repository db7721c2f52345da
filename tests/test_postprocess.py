"""Largest-region post-processing, checked against a breadth-first search written here."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from petseg.errors import ParamsError
from petseg.params import validate
from petseg.postprocess import largest_component_filled, postprocess_masks
from tests.paramsfile import default_params


def reference_largest_filled(mask: np.ndarray) -> np.ndarray:
    """Largest 8-connected region (first found wins a tie), then every background pixel not reachable
    from the border through 4-connected background becomes pet."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: list[tuple[int, int]] = []
    for y0 in range(height):
        for x0 in range(width):
            if not mask[y0, x0] or seen[y0, x0]:
                continue
            region, queue = [], deque([(y0, x0)])
            seen[y0, x0] = True
            while queue:
                y, x = queue.popleft()
                region.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            if len(region) > len(best):
                best = region
    kept = np.zeros_like(mask, dtype=bool)
    for y, x in best:
        kept[y, x] = True
    outside = np.zeros_like(kept)
    queue = deque((y, x) for y in range(height) for x in range(width) if (y in (0, height - 1) or x in (0, width - 1)))
    queue = deque((y, x) for y, x in queue if not kept[y, x])
    for y, x in queue:
        outside[y, x] = True
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < height and 0 <= nx < width and not kept[ny, nx] and not outside[ny, nx]:
                outside[ny, nx] = True
                queue.append((ny, nx))
    return ~outside


def test_the_largest_region_is_kept_and_its_hole_filled():
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:8, 1:8] = True
    mask[4, 4] = False  # a hole
    mask[9:11, 9:11] = True  # a smaller blob
    mask[8, 8] = True  # touches the big square at a corner only: 8-connected, so part of it
    out = largest_component_filled(mask)
    expected = np.zeros_like(mask)
    expected[1:8, 1:8] = True
    expected[8, 8] = True
    expected[9:11, 9:11] = True  # joined through (8, 8) diagonally
    np.testing.assert_array_equal(out, expected)
    cut = mask.copy()
    cut[8, 8] = False
    out = largest_component_filled(cut)
    assert out[4, 4] and not out[9:11, 9:11].any() and out.sum() == 49


@pytest.mark.parametrize("seed", range(12))
def test_random_masks_match_the_reference(seed: int):
    rng = np.random.default_rng(seed)
    mask = rng.random((3, 17, 23)) < rng.uniform(0.2, 0.7)
    got = postprocess_masks(torch.from_numpy(mask), "largest")
    assert got.dtype == torch.bool and got.shape == mask.shape
    for one, done in zip(mask, got.numpy()):
        np.testing.assert_array_equal(done, reference_largest_filled(one))


def test_empty_and_full_masks_and_none():
    masks = torch.zeros(2, 5, 5, dtype=torch.bool)
    masks[1] = True
    np.testing.assert_array_equal(postprocess_masks(masks, "largest").numpy(), masks.numpy())
    noisy = torch.from_numpy(np.random.default_rng(0).random((2, 9, 9)) < 0.5)
    assert postprocess_masks(noisy, "none") is noisy
    with pytest.raises(ValueError, match="postprocess must be one of none, largest"):
        postprocess_masks(noisy, "biggest")


@pytest.mark.parametrize("section", ["evaluate", "infer"])
def test_the_params_key_is_checked_and_defaults_to_none(section: str):
    raw = default_params()
    raw[section].pop("postprocess", None)
    assert getattr(validate(raw), section).postprocess == "none"
    raw[section]["postprocess"] = "biggest"
    with pytest.raises(ParamsError, match=rf"{section}\.postprocess"):
        validate(raw)
