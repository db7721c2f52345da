"""One synthetic photo and its trimap, drawn from its own seed."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from petseg.data.layout import CAT
from petseg.data.synthetic.shapes import distractor, pet_parts, place
from petseg.data.synthetic.textures import MAX_SIDE, colours, paint, texture

# Photo sizes like the real set's: the long side 250-500 px (most real photos are 500 x 375),
# the short side 0.6-1.0 of it, landscape or portrait.
LONG_SIDE = (250, MAX_SIDE)
ASPECT = (0.6, 1.0)
MIN_SIDE = int(LONG_SIDE[0] * ASPECT[0])


def render(seed: int, index: int, species: int, breed_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic photo (H x W x 3 uint8) and its trimap (H x W uint8, values 1/2/3)."""
    rng = np.random.default_rng([seed, 1, index])
    long_side = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    short = max(MIN_SIDE, round(long_side * rng.uniform(*ASPECT)))
    height, width = (long_side, short) if rng.random() < 0.3 else (short, long_side)
    pet_texture = int(rng.integers(2**32))
    background_texture = pet_texture if rng.random() < 0.1 else int(rng.integers(2**32))

    canvas = texture(np.random.default_rng(background_texture), height, width)
    for _ in range(int(rng.integers(1, 5))):
        mimic = rng.random() < 0.3
        paint(
            canvas,
            distractor(rng, width, height, short * rng.uniform(0.15, 0.6)),
            pet_texture if mimic else int(rng.integers(2**32)),
            rng.uniform(0, 0.4),
        )

    parts, features = pet_parts(rng, species, pointy_ears=species == CAT or breed_id % 3 == 0)
    points = np.concatenate(parts)
    extent = float(max(np.ptp(points[:, 0]), np.ptp(points[:, 1])))
    scale = short * rng.uniform(0.75, 1.3) / extent
    centre = (width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7))
    angle, flip = rng.uniform(-0.6, 0.6), bool(rng.random() < 0.5)
    pet = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(pet)
    for polygon in place(parts, scale, angle, flip, centre):
        draw.polygon(polygon, fill=255)
    pet_region = paint(canvas, pet, pet_texture, rng.uniform(0, 0.4))
    if pet_region is None:  # the pet fell entirely outside the frame: centre it
        return render(seed + 1_000_003, index, species, breed_id)
    face = Image.new("L", (width, height), 0)
    face_draw = ImageDraw.Draw(face)
    for polygon in place(features, scale, angle, flip, centre):
        face_draw.polygon(polygon, fill=255)
    eyes = (np.asarray(face) > 127) & pet_region
    canvas[:, eyes] = (colours(rng, 1)[0] * rng.uniform(0.3, 0.8))[:, None]

    visible = pet_region
    if rng.random() < 0.4:  # something in front of the pet
        occluder = distractor(rng, width, height, short * rng.uniform(0.2, 0.5))
        covered = np.asarray(occluder) > 127
        left = pet_region & ~covered
        if 0.35 * pet_region.sum() <= left.sum() < pet_region.sum():
            paint(canvas, occluder, int(rng.integers(2**32)), rng.uniform(0, 0.3))
            visible = left

    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, size=3)
    contrast = rng.uniform(0.75, 1.15)
    mean = float(canvas.mean())
    for channel in range(3):
        canvas[channel] -= mean
        canvas[channel] *= np.float32(contrast * gain[channel])
        canvas[channel] += np.float32(mean * gain[channel])
    image = np.ascontiguousarray(np.clip(canvas, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    return image, trimap_of(visible, band=max(1, round(short / 70)))


def trimap_of(pet: np.ndarray, band: int) -> np.ndarray:
    """1 inside the pet, 3 in a band straddling its outline, 2 elsewhere (as the real trimaps)."""
    # A box mean over a (2*band+1)^2 square is > 0 where the square dilation is set and
    # 255 where the square erosion is: exact, and much faster than rank filters.
    mean = np.asarray(Image.fromarray(pet.astype(np.uint8) * 255).filter(ImageFilter.BoxBlur(band)))
    grown, shrunk = mean > 0, mean == 255
    trimap = np.full(pet.shape, 2, dtype=np.uint8)
    trimap[grown] = 3
    trimap[shrunk] = 1
    return trimap


# ------------------------------------------------------------------- writing
