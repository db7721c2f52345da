"""The recipe study's own prediction recipe (benchmarks/recipes.py): multi-scale test-time augmentation."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from benchmarks.recipes import multi_scale_probabilities
from petseg.models import build_model
from petseg.predict import probabilities


def test_multi_scale_tta_averages_the_maps_of_each_scale_resized_back() -> None:
    torch.manual_seed(0)
    model = build_model("unet", base_channels=4).eval()
    with torch.no_grad():
        model.head.weight.mul_(30)  # an untrained model's map is nearly flat: make it vary
    smooth = ndimage.zoom(np.random.default_rng(0).random((2, 3, 8, 8)), (1, 1, 8, 8), order=3)
    x = torch.from_numpy(smooth).float().clamp(0, 1)  # smooth: torch's antialiased shrink ~ scipy's linear zoom

    def flip_averaged(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return ((torch.sigmoid(model(images)) + torch.sigmoid(model(images.flip(-1))).flip(-1)) / 2).numpy()

    def zoom(array: np.ndarray, factor: float) -> np.ndarray:
        return ndimage.zoom(array, (1, 1, factor, factor), order=1, grid_mode=True, mode="nearest")

    full = flip_averaged(x)
    half = zoom(flip_averaged(torch.from_numpy(zoom(x.numpy(), 0.5)).float()), 2)
    # at scale 1 alone it is petseg's flip TTA, to the bit
    assert np.array_equal(multi_scale_probabilities(model, x, (1.0,), tta=True).numpy(), full)
    assert torch.equal(multi_scale_probabilities(model, x, (1.0,), tta=True), probabilities(model, x, tta=True))
    got = multi_scale_probabilities(model, x, (0.5, 1.0), tta=True).numpy()
    error = np.abs(got - (full + half) / 2).mean()
    assert error < 1e-3 and np.abs(got - full).mean() > 10 * error, (error, np.abs(got - full).mean())
