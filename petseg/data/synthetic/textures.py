"""Surfaces for pets, backgrounds and distractors alike: one texture generator over one shared palette.

Every colour and pattern is as likely to be pet as background, so that no
colour threshold can separate them.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# the largest photo side drawn (petseg.data.synthetic.render draws photos up to it)
MAX_SIDE = 500


# One palette for everything (fur, floors, walls, sofas, grass): no colour belongs to pets only.
PALETTE = np.array(
    [
        (22, 20, 22), (58, 52, 48), (105, 100, 96), (165, 160, 155), (232, 228, 220),
        (118, 74, 42), (165, 112, 62), (205, 160, 100), (214, 128, 52), (88, 58, 44),
        (150, 140, 112), (88, 112, 64), (72, 92, 122), (140, 62, 52), (204, 188, 152),
        (112, 122, 84), (182, 150, 130), (48, 64, 56),
    ],
    dtype=np.float32,
)  # fmt: skip


# --------------------------------------------------------------------- the plan


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    grid_h = max(2, round(cells * height / max(height, width)))
    grid_w = max(2, round(cells * width / max(height, width)))
    coarse = Image.fromarray(rng.random((grid_h, grid_w), dtype=np.float32))
    field = np.asarray(coarse.resize((width, height), Image.BILINEAR), dtype=np.float32)
    low, high = float(field.min()), float(field.max())
    return (field - low) / (high - low + 1e-6)


def colours(rng: np.random.Generator, count: int) -> np.ndarray:
    picks = rng.choice(len(PALETTE), size=count, replace=False)
    return np.clip(PALETTE[picks] + rng.normal(0.0, 14.0, size=(count, 3)).astype(np.float32), 0, 255)


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A 3 x height x width float32 surface (0..255, channels first) from the one generator all regions share."""
    kind = int(rng.integers(0, 5))
    first, second = colours(rng, 2)
    if kind == 0:  # smooth noise
        blend = _smooth_noise(rng, height, width, int(rng.integers(3, 12)))
    elif kind == 1:  # stripes, gently warped
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(5, 26)
        yy, xx = np.ogrid[:height, :width]
        along = (xx * math.cos(angle) + yy * math.sin(angle)).astype(np.float32)
        warp = _smooth_noise(rng, height, width, 4) * rng.uniform(0, 2 * period)
        blend = 0.5 + 0.5 * np.sin((along + warp) * (2 * math.pi / period) + rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.5:
            blend = np.clip((blend - 0.5) * 4 + 0.5, 0, 1)
    elif kind == 2:  # spots
        spots = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(spots)
        radius = max(2.0, rng.uniform(0.03, 0.12) * min(height, width))
        for _ in range(int(rng.integers(4, 18))):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            rx, ry = radius * rng.uniform(0.5, 1.3), radius * rng.uniform(0.5, 1.3)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
        if rng.random() < 0.5:
            spots = spots.filter(ImageFilter.BoxBlur(radius / 3))
        blend = np.asarray(spots, dtype=np.float32) / 255.0
    elif kind == 3:  # linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.ogrid[:height, :width]
        along = (xx * math.cos(angle) + yy * math.sin(angle)).astype(np.float32)
        blend = (along - along.min()) / (float(along.max() - along.min()) + 1e-6)
    else:  # two-tone blotches (calico, tabby patches, dappled light)
        field = _smooth_noise(rng, height, width, int(rng.integers(4, 10)))
        blend = np.clip((field - rng.uniform(0.35, 0.65)) * 8 + 0.5, 0, 1)
    top, left = (int(v) for v in rng.integers(0, _GRAIN_SIDE - MAX_SIDE, size=2))
    grain = _grain()[top : top + height, left : left + width] * np.float32(rng.uniform(2, 11))
    blend = np.asarray(blend, dtype=np.float32)
    surface = np.empty((3, height, width), dtype=np.float32)
    for channel in range(3):  # channels first: numpy is several times faster than on an inner axis of 3
        np.multiply(blend, second[channel] - first[channel], out=surface[channel])
        surface[channel] += grain
        surface[channel] += first[channel]
    return surface


_GRAIN_SIDE = 2 * MAX_SIDE


@functools.cache
def _grain() -> np.ndarray:
    """A fixed tile of Gaussian grain; textures take random windows of it (drawing fresh noise is slow)."""
    return np.random.default_rng(20240601).standard_normal((_GRAIN_SIDE, _GRAIN_SIDE), dtype=np.float32)


def paint(canvas: np.ndarray, mask: Image.Image, tex_seed: int, shade: float) -> np.ndarray | None:
    """Paint the region ``mask`` (L, 255 inside) of ``canvas`` (3 x H x W) with a texture; return the boolean region."""
    box = mask.getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    crop = mask.crop(box)
    inside = np.asarray(crop) > 127
    surface = texture(np.random.default_rng(tex_seed), bottom - top, right - left)
    if shade > 0:  # darker towards the outline, a hint of volume (pets and distractors alike)
        radius = max(1.0, 0.06 * max(right - left, bottom - top))
        soft = np.asarray(crop.filter(ImageFilter.BoxBlur(radius)), dtype=np.float32) / 255.0
        surface *= 1.0 - shade + shade * soft
    window = canvas[:, top:bottom, left:right]
    window[:, inside] = surface[:, inside]
    region = np.zeros(canvas.shape[1:], dtype=bool)
    region[top:bottom, left:right] = inside
    return region


# -------------------------------------------------------------------- shapes
