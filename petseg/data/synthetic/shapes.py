"""Outlines of pets (articulated: body, head, ears, snout, legs, tail, eyes) and of objects that are not pets."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from petseg.data.layout import CAT


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


def pet_parts(rng: np.random.Generator, species: int, pointy_ears: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Outline polygons and facial-feature polygons of one pet, in local units, facing +x."""

    def j() -> float:  # proportion jitter
        return rng.uniform(0.8, 1.25)

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


def place(
    polygons: list[np.ndarray], scale: float, angle: float, flip: bool, centre: tuple[float, float]
) -> list[list[tuple[float, float]]]:
    c, s = math.cos(angle), math.sin(angle)
    placed = []
    for points in polygons:
        x = points[:, 0] * (-scale if flip else scale)
        y = points[:, 1] * scale
        placed.append(list(zip((centre[0] + c * x - s * y).tolist(), (centre[1] + s * x + c * y).tolist())))
    return placed


def distractor(rng: np.random.Generator, width: int, height: int, size: float) -> Image.Image:
    """A background or occluding object that is not pet-shaped."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    kind = int(rng.integers(0, 5))
    if kind == 0:  # rotated rectangle
        w, h = size * rng.uniform(0.4, 1.2), size * rng.uniform(0.3, 1.0)
        corners = np.array([(-w, -h), (w, -h), (w, h), (-w, h)]) / 2
        draw.polygon(place([corners], 1.0, rng.uniform(0, math.pi), False, (x, y))[0], fill=255)
    elif kind == 1:  # ellipse
        draw.polygon(
            place(
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
        draw.polygon(place([bar], 1.0, angle, False, (x, y))[0], fill=255)
    return mask


# ------------------------------------------------------------------ rendering
