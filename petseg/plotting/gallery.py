"""The worst-case gallery (plot stage): the lowest-Dice test images with the predictions the evaluate stage scored.

Drawn from the per-image table (names, Dice), the worst images' masks
(``plots/evaluate/<model>_worst.npy``) and the test cache (images, true masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from petseg.errors import DataError
from petseg.evaluation.tables import worst_indices
from petseg.io import atomic_path
from petseg.plotting.figures import pyplot

if TYPE_CHECKING:
    from petseg.data.cache import Split
    from petseg.evaluation.tables import PerImage

# one gallery cell (width, height) in pixels; a gallery is 3 cells wide and one row per image
GALLERY_CELL_PX = (200, 250)
GALLERY_DPI = 100


def gallery_pixel_size(n_images: int) -> tuple[int, int]:
    """(width, height) in pixels of a gallery with ``n_images`` rows."""
    return 3 * GALLERY_CELL_PX[0], n_images * GALLERY_CELL_PX[1]


def error_image(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB picture of a prediction: correct pet white, false pet red, missed pet blue, background black."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    picture = np.zeros(predicted.shape + (3,), np.uint8)
    picture[predicted & truth] = (255, 255, 255)
    picture[predicted & ~truth] = (230, 40, 40)
    picture[~predicted & truth] = (40, 90, 255)
    return picture


def save_worst_gallery(
    path: str | Path,
    title: str,
    images: np.ndarray,
    truths: np.ndarray,
    predictions: np.ndarray,
    names: Sequence[str],
    dice: Sequence[float],
) -> None:
    """A PNG with one row per image: the image (name, Dice), the true mask, the prediction coloured by error."""
    plt = pyplot()
    rows = len(names)
    width, height = gallery_pixel_size(rows)
    figsize = (width / GALLERY_DPI, height / GALLERY_DPI)
    fig, axes = plt.subplots(rows, 3, figsize=figsize, dpi=GALLERY_DPI, squeeze=False)
    try:
        for row in range(rows):
            left, middle, right = axes[row]
            left.imshow(images[row], interpolation="nearest")
            left.set_title(f"{names[row]}\nDice {dice[row]:.3f}", fontsize=8)
            middle.imshow(truths[row], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            middle.set_title("truth", fontsize=8)
            right.imshow(error_image(predictions[row], truths[row]), interpolation="nearest")
            right.set_title("prediction\n(red: false pet, blue: missed)", fontsize=8)
            for axis in axes[row]:
                axis.set_axis_off()
        fig.suptitle(f"{title}: {rows} worst test images", fontsize=9)
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=1 - 0.35 / rows, hspace=0.45, wspace=0.05)
        with atomic_path(path) as temp:
            fig.savefig(temp, format="png", dpi=GALLERY_DPI)
    finally:
        plt.close(fig)


def write_gallery(path: str | Path, title: str, table: PerImage, masks: np.ndarray | None, split: Split) -> None:
    """Draw the worst images whose masks the evaluate stage kept (``masks`` None: none kept, no gallery)."""
    path = Path(path)
    if masks is None:
        path.unlink(missing_ok=True)
        return
    if table.names != list(split.names) or len(masks) > len(table.names):
        raise DataError(
            f"{split.directory}: the test cache holds other images than the evaluate stage scored "
            f"({title}); re-run evaluate (dvc repro evaluate)"
        )
    chosen = worst_indices(table.scores["dice"], len(masks))
    save_worst_gallery(
        path,
        title,
        np.asarray(split.images[chosen]),
        np.asarray(split.masks[chosen]),
        masks,
        [table.names[i] for i in chosen],
        [float(table.scores["dice"][i]) for i in chosen],
    )
