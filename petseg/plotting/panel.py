"""The inference panel: a title line, then image | ground truth (when known) | probability | mask | overlay.

Built with Pillow (not matplotlib), so that thousands of panels stay fast; the
probability map takes matplotlib's viridis colour map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from petseg.io import atomic_path

TILE_HEIGHT = 256
MIN_TILE_WIDTH = 96
LABEL_HEIGHT = 18
GAP = 4
OVERLAY_COLOUR = (255, 40, 40)
OVERLAY_ALPHA = 0.45


def _viridis_lut() -> np.ndarray:
    """matplotlib's viridis as a 256 x 3 uint8 lookup table."""
    from matplotlib import colormaps

    return (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)


VIRIDIS = _viridis_lut()


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


FONT = _font()


def tile_size(width: int, height: int) -> tuple[int, int]:
    """Panel tile size: TILE_HEIGHT high, the image's aspect ratio (width clamped to 96..4x height)."""
    tile_width = round(width * TILE_HEIGHT / max(height, 1))
    return max(MIN_TILE_WIDTH, min(4 * TILE_HEIGHT, tile_width)), TILE_HEIGHT


def _fit_text(text: str, width: int) -> str:
    if FONT.getlength(text) <= width - 4:
        return text
    while text and FONT.getlength(text + "…") > width - 4:
        text = text[:-1]
    return text + "…"


def make_panel(
    image: Image.Image,
    probability: np.ndarray,
    mask: Image.Image,
    trimap: np.ndarray | None,
    *,
    title: str,
    dice: float | None = None,
) -> Image.Image:
    """A title line, then image | ground truth (when known) | probability | mask | overlay, each labelled."""
    size = tile_size(*image.size)
    image_tile = image.resize(size, Image.BILINEAR)
    probability_tile = Image.fromarray(probability.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
    probability_levels = np.clip(np.asarray(probability_tile) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    mask_tile = mask.resize(size, Image.BILINEAR)
    alpha = np.asarray(mask_tile, dtype=np.float32)[..., None] / 255.0 * OVERLAY_ALPHA
    overlay = np.asarray(image_tile, dtype=np.float32) * (1 - alpha) + np.array(OVERLAY_COLOUR, np.float32) * alpha
    tiles: list[tuple[str, Image.Image]] = [("image", image_tile)]
    if trimap is not None:
        shades = np.array([0, 255, 0, 128], np.uint8)  # 1 pet white, 2 background black, 3 boundary grey
        tiles.append(("ground truth", Image.fromarray(shades[trimap]).resize(size, Image.NEAREST).convert("RGB")))
    tiles.append(("probability", Image.fromarray(VIRIDIS[probability_levels])))
    tiles.append(("mask", mask_tile.convert("RGB")))
    tiles.append(("overlay", Image.fromarray(np.clip(overlay + 0.5, 0, 255).astype(np.uint8))))

    width = len(tiles) * size[0] + (len(tiles) - 1) * GAP
    panel = Image.new("RGB", (width, 2 * LABEL_HEIGHT + size[1]), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    heading = title + (f"   Dice {dice:.3f} against the ground truth" if dice is not None else "")
    draw.text((2, 2), _fit_text(heading, width), fill=(0, 0, 0), font=FONT)
    for i, (label, tile) in enumerate(tiles):
        left = i * (size[0] + GAP)
        panel.paste(tile, (left, 2 * LABEL_HEIGHT))
        draw.text((left + 2, LABEL_HEIGHT + 2), _fit_text(label, size[0]), fill=(80, 80, 80), font=FONT)
    return panel


# zlib level 1: PNG encoding was two thirds of inference time at the default level 6, for files ~20% larger
PNG_COMPRESS_LEVEL = 1


def save_png(path: Path, image: Image.Image) -> None:
    """Write a PNG atomically; a write failure (disk full, no permission) is an OutputError naming the file."""
    with atomic_path(path) as temp:
        image.save(temp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
