"""Post-processing of predicted masks for photos that hold one pet (``evaluate.postprocess``, ``infer.postprocess``).

``none`` keeps the thresholded mask as it is. ``largest`` keeps its largest
8-connected pet region and fills the holes in it (scipy.ndimage): an
Oxford-IIIT Pet photo shows one animal, so a stray blob is background called
pet and a hole is pet called background. An empty mask stays empty.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from petseg.params import POSTPROCESS

__all__ = ["POSTPROCESS", "largest_component_filled", "postprocess_masks"]
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """One H x W boolean mask: its largest 8-connected region with its holes filled."""
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if count <= 1:
        return ndimage.binary_fill_holes(mask) if count else np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0  # the background
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))


def postprocess_masks(masks: torch.Tensor, how: str) -> torch.Tensor:
    """Apply ``how`` (one of POSTPROCESS) to boolean N x H x W masks; the result is on the masks' device."""
    if how not in POSTPROCESS:
        raise ValueError(f"postprocess must be one of {', '.join(POSTPROCESS)}, got {how!r}")
    if how == "none":
        return masks
    host = masks.detach().cpu().numpy().astype(bool, copy=False)
    done = np.stack([largest_component_filled(mask) for mask in host]) if len(host) else host
    return torch.from_numpy(done).to(masks.device)
