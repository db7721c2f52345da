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

import functools
import logging
import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from petseg.data.layout import (
    CAT,
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
    usable_cpus,
    write_list,
)

log = logging.getLogger(__name__)

# Photo sizes like the real set's: the long side 250-500 px (most real photos are 500 x 375),
# the short side 0.6-1.0 of it, landscape or portrait.
LONG_SIDE = (250, 500)
ASPECT = (0.6, 1.0)
MIN_SIDE, MAX_SIDE = int(LONG_SIDE[0] * ASPECT[0]), LONG_SIDE[1]

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


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    grid_h = max(2, round(cells * height / max(height, width)))
    grid_w = max(2, round(cells * width / max(height, width)))
    coarse = Image.fromarray(rng.random((grid_h, grid_w), dtype=np.float32))
    field = np.asarray(coarse.resize((width, height), Image.BILINEAR), dtype=np.float32)
    low, high = float(field.min()), float(field.max())
    return (field - low) / (high - low + 1e-6)


def _colours(rng: np.random.Generator, count: int) -> np.ndarray:
    picks = rng.choice(len(PALETTE), size=count, replace=False)
    return np.clip(PALETTE[picks] + rng.normal(0.0, 14.0, size=(count, 3)).astype(np.float32), 0, 255)


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A 3 x height x width float32 surface (0..255, channels first) from the one generator all regions share."""
    kind = int(rng.integers(0, 5))
    first, second = _colours(rng, 2)
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


def _paint(canvas: np.ndarray, mask: Image.Image, tex_seed: int, shade: float) -> np.ndarray | None:
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


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _limb(x0: float, y0: float, x1: float, y1: float, width: float) -> np.ndarray:
    """A rounded bar from (x0, y0) to (x1, y1)."""
    length = math.hypot(x1 - x0, y1 - y0) + 1e-6
    angle = math.atan2(y1 - y0, x1 - x0)
    return _ellipse((x0 + x1) / 2, (y0 + y1) / 2, length / 2 + width / 2, width / 2, angle, n=20)


def _tail(
    rng: np.random.Generator, x0: float, y0: float, direction: float, length: float, width: float
) -> list[np.ndarray]:
    parts, x, y, heading = [], x0, y0, direction
    bend = rng.uniform(-0.6, 0.6)
    for _ in range(4):
        nx, ny = x + math.cos(heading) * length / 4, y + math.sin(heading) * length / 4
        parts.append(_limb(x, y, nx, ny, width))
        x, y, heading = nx, ny, heading + bend
    return parts


def _pet_parts(rng: np.random.Generator, species: int, pointy_ears: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Outline polygons and facial-feature polygons of one pet, in local units, facing +x."""
    j = lambda: rng.uniform(0.8, 1.25)  # proportion jitter
    pose = rng.choice(["standing", "sitting", "lying", "face"], p=[0.3, 0.25, 0.2, 0.25])
    parts: list[np.ndarray] = []
    if pose == "standing":
        parts.append(_ellipse(0, 0, 1.0 * j(), 0.5 * j()))
        head = (1.05, -0.55 * j(), 0.48 * j())
        for x in (-0.7, -0.45, 0.5, 0.75):
            step = rng.uniform(-0.3, 0.3)
            parts.append(_limb(x * j(), 0.2, x + step, 1.05 * j(), 0.24 * j()))
        tail_at, tail_dir = (-0.95, -0.1), math.pi + rng.uniform(-1.2, 0.6)
    elif pose == "sitting":
        parts.append(_ellipse(0, 0, 0.62 * j(), 0.85 * j(), rng.uniform(-0.3, 0.1)))
        parts.append(_ellipse(-0.2, 0.55, 0.6 * j(), 0.4 * j()))
        head = (0.15, -1.0 * j(), 0.45 * j())
        for dx in (0.1, 0.35):
            parts.append(_limb(dx, 0.2, dx + rng.uniform(0, 0.2), 0.95, 0.18 * j()))
        tail_at, tail_dir = (-0.6, 0.85), rng.uniform(-0.3, 0.5) + (0 if rng.random() < 0.5 else math.pi)
    elif pose == "lying":
        parts.append(_ellipse(0, 0.2, 1.1 * j(), 0.45 * j()))
        head = (1.0, -0.25 * j(), 0.48 * j())
        for dy in (0.35, 0.5):
            parts.append(_limb(0.7, dy, 1.45 * j(), dy + 0.1, 0.16 * j()))
        tail_at, tail_dir = (-1.05, 0.3), math.pi + rng.uniform(-0.5, 0.5)
    else:  # close-up face with shoulders
        head = (0.0, 0.0, 1.0)
        parts.append(_ellipse(0.0, 1.25, 1.35 * j(), 0.7 * j()))
        tail_at, tail_dir = None, 0.0
    hx, hy, hr = head
    parts.append(_ellipse(hx, hy, hr * j(), hr * rng.uniform(0.85, 1.05)))
    for side in (-1, 1):
        if pointy_ears:
            up = -math.pi / 2 + side * rng.uniform(0.45, 0.8)
            base = [(hx + hr * math.cos(up + d), hy + hr * math.sin(up + d)) for d in (-0.32, 0.32)]
            tip = (hx + hr * 1.6 * j() * math.cos(up), hy + hr * 1.6 * j() * math.sin(up))
            parts.append(np.array([base[0], tip, base[1]], dtype=np.float64))
        else:
            angle = -math.pi / 2 + side * 1.25
            cx, cy = hx + 0.9 * hr * math.cos(angle), hy + 0.9 * hr * math.sin(angle) + 0.35 * hr
            parts.append(_ellipse(cx, cy, 0.28 * hr * j(), 0.6 * hr * j(), side * 0.25))
    if species != CAT:  # a snout
        parts.append(_ellipse(hx + 0.75 * hr, hy + 0.3 * hr, 0.45 * hr * j(), 0.3 * hr * j()))
    if tail_at is not None:
        length = (1.2 if species == CAT else 0.6) * j()
        parts.extend(_tail(rng, tail_at[0], tail_at[1], tail_dir, length, (0.12 if species == CAT else 0.17) * j()))
    eye_dx = 0.3 * hr if pose == "face" else 0.22 * hr
    features = [_ellipse(hx + 0.25 * hr + side * eye_dx, hy - 0.12 * hr, 0.11 * hr, 0.08 * hr) for side in (-1, 1)]
    features.append(_ellipse(hx + (0.25 if pose == "face" else 0.8) * hr, hy + 0.3 * hr, 0.1 * hr, 0.07 * hr))
    return parts, features


def _place(
    polygons: list[np.ndarray], scale: float, angle: float, flip: bool, centre: tuple[float, float]
) -> list[list[tuple[float, float]]]:
    c, s = math.cos(angle), math.sin(angle)
    placed = []
    for points in polygons:
        x = points[:, 0] * (-scale if flip else scale)
        y = points[:, 1] * scale
        placed.append(list(zip((centre[0] + c * x - s * y).tolist(), (centre[1] + s * x + c * y).tolist())))
    return placed


def _distractor(rng: np.random.Generator, width: int, height: int, size: float) -> Image.Image:
    """A background or occluding object that is not pet-shaped."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    kind = int(rng.integers(0, 5))
    if kind == 0:  # rotated rectangle
        w, h = size * rng.uniform(0.4, 1.2), size * rng.uniform(0.3, 1.0)
        corners = np.array([(-w, -h), (w, -h), (w, h), (-w, h)]) / 2
        draw.polygon(_place([corners], 1.0, rng.uniform(0, math.pi), False, (x, y))[0], fill=255)
    elif kind == 1:  # ellipse
        draw.polygon(
            _place(
                [_ellipse(0, 0, size / 2, size * rng.uniform(0.2, 0.5))], 1.0, rng.uniform(0, math.pi), False, (x, y)
            )[0],
            fill=255,
        )
    elif kind == 2:  # smooth blob
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        radius = size / 2 * (1 + sum(rng.uniform(-0.18, 0.18) * np.sin(k * t + rng.uniform(0, 6)) for k in (2, 3)))
        draw.polygon(list(zip((x + radius * np.cos(t)).tolist(), (y + radius * np.sin(t)).tolist())), fill=255)
    elif kind == 3:  # ring
        outer, inner = size / 2, size / 2 * rng.uniform(0.45, 0.75)
        draw.ellipse((x - outer, y - outer, x + outer, y + outer), fill=255)
        draw.ellipse((x - inner, y - inner, x + inner, y + inner), fill=0)
    else:  # a bar across the picture (a post, a shelf edge, a fence rail)
        angle = rng.uniform(0, math.pi)
        reach = 2 * max(width, height)
        bar = _limb(-reach, 0, reach, 0, size * rng.uniform(0.15, 0.3))
        draw.polygon(_place([bar], 1.0, angle, False, (x, y))[0], fill=255)
    return mask


# ------------------------------------------------------------------ rendering


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
        _paint(
            canvas,
            _distractor(rng, width, height, short * rng.uniform(0.15, 0.6)),
            pet_texture if mimic else int(rng.integers(2**32)),
            rng.uniform(0, 0.4),
        )

    parts, features = _pet_parts(rng, species, pointy_ears=species == CAT or breed_id % 3 == 0)
    points = np.concatenate(parts)
    extent = float(max(np.ptp(points[:, 0]), np.ptp(points[:, 1])))
    scale = short * rng.uniform(0.75, 1.3) / extent
    centre = (width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7))
    angle, flip = rng.uniform(-0.6, 0.6), bool(rng.random() < 0.5)
    pet = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(pet)
    for polygon in _place(parts, scale, angle, flip, centre):
        draw.polygon(polygon, fill=255)
    pet_region = _paint(canvas, pet, pet_texture, rng.uniform(0, 0.4))
    if pet_region is None:  # the pet fell entirely outside the frame: centre it
        return render(seed + 1_000_003, index, species, breed_id)
    face = Image.new("L", (width, height), 0)
    face_draw = ImageDraw.Draw(face)
    for polygon in _place(features, scale, angle, flip, centre):
        face_draw.polygon(polygon, fill=255)
    eyes = (np.asarray(face) > 127) & pet_region
    canvas[:, eyes] = (_colours(rng, 1)[0] * rng.uniform(0.3, 0.8))[:, None]

    visible = pet_region
    if rng.random() < 0.4:  # something in front of the pet
        occluder = _distractor(rng, width, height, short * rng.uniform(0.2, 0.5))
        covered = np.asarray(occluder) > 127
        left = pet_region & ~covered
        if 0.35 * pet_region.sum() <= left.sum() < pet_region.sum():
            _paint(canvas, occluder, int(rng.integers(2**32)), rng.uniform(0, 0.3))
            visible = left

    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, size=3)
    contrast = rng.uniform(0.75, 1.15)
    mean = float(canvas.mean())
    for channel in range(3):
        canvas[channel] -= mean
        canvas[channel] *= np.float32(contrast * gain[channel])
        canvas[channel] += np.float32(mean * gain[channel])
    image = np.ascontiguousarray(np.clip(canvas, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    return image, _trimap(visible, band=max(1, round(short / 70)))


def _trimap(pet: np.ndarray, band: int) -> np.ndarray:
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
