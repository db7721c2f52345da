"""Raw folders in the official layout whose files are broken in every way the preprocess stage must handle."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# ------------------------------------------------------------------ raw builders


def _picture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth RGB picture (so reduced-scale JPEG decoding stays close to full decoding)."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-1, 1, size=(2, 3))
    picture = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
    picture += rng.normal(0, 4, size=picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def _trimap(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An ellipse of pet (1) with a boundary band (3) on background (2)."""
    yy, xx = np.mgrid[:height, :width]
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    radius = np.hypot((xx - cx) / (0.3 * width), (yy - cy) / (0.3 * height))
    trimap = np.full((height, width), 2, dtype=np.uint8)
    trimap[radius < 1.1] = 3
    trimap[radius < 0.9] = 1
    return trimap


def _save(array: np.ndarray, path: Path, fmt: str, mode: str | None = None, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, format=fmt, **kwargs)


class Raw:
    """A raw folder in the official layout, built file by file."""

    def __init__(self, root: Path, seed: int = 0):
        self.root = root
        self.rng = np.random.default_rng(seed)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)

    def image(self, name: str) -> Path:
        return self.root / "images" / f"{name}.jpg"

    def trimap(self, name: str) -> Path:
        return self.root / "annotations" / "trimaps" / f"{name}.png"

    def pair(self, name: str, width: int | None = None, height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        width = width or int(self.rng.integers(70, 130))
        height = height or int(self.rng.integers(70, 130))
        picture, trimap = _picture(self.rng, width, height), _trimap(self.rng, width, height)
        _save(picture, self.image(name), "JPEG", quality=92)
        _save(trimap, self.trimap(name), "PNG")
        return picture, trimap

    def lists(self, trainval: list[str], test: list[str]) -> None:
        for file_name, names in (("trainval.txt", trainval), ("test.txt", test)):
            lines = "".join(f"{name} {1 + i % 37} {1 + i % 2} {1 + i % 12}\n" for i, name in enumerate(names))
            (self.root / "annotations" / file_name).write_text(lines)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _jpeg_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# Each broken case: how to break a freshly written good pair, and the expected (kind, reason).
# kind is "converted" or "skipped"; reason None means "only check the prefix" (decoder messages vary).
Case = tuple[Callable[[Raw, str], None], str, str]


def _png_as_jpg(raw: Raw, name: str) -> None:
    picture, _ = raw.pair(name)
    _save(picture, raw.image(name), "PNG")


def _gif_as_jpg(raw: Raw, name: str) -> None:
    picture, _ = raw.pair(name)
    _save(picture, raw.image(name), "GIF")


def _rgba(raw: Raw, name: str) -> None:
    picture, _ = raw.pair(name)
    alpha = np.full(picture.shape[:2] + (1,), 200, dtype=np.uint8)
    _save(np.concatenate([picture, alpha], axis=2), raw.image(name), "PNG")


def _palette(raw: Raw, name: str) -> None:
    picture, _ = raw.pair(name)
    _save(picture, raw.image(name), "PNG", mode="P")


def _grayscale(raw: Raw, name: str) -> None:
    picture, _ = raw.pair(name)
    _save(picture, raw.image(name), "JPEG", mode="L")


def _cmyk(raw: Raw, name: str) -> None:
    picture, _ = raw.pair(name)
    raw.image(name).write_bytes(_jpeg_bytes(picture, "CMYK"))


def _sixteen_bit(raw: Raw, name: str) -> None:
    picture, _ = raw.pair(name)
    gray = np.asarray(Image.fromarray(picture).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(raw.image(name), format="PNG")


def _missing_image(raw: Raw, name: str) -> None:
    raw.pair(name)
    raw.image(name).unlink()


def _missing_trimap(raw: Raw, name: str) -> None:
    raw.pair(name)
    raw.trimap(name).unlink()


def _empty_image(raw: Raw, name: str) -> None:
    raw.pair(name)
    raw.image(name).write_bytes(b"")


def _empty_trimap(raw: Raw, name: str) -> None:
    raw.pair(name)
    raw.trimap(name).write_bytes(b"")


def _truncated_jpeg(raw: Raw, name: str) -> None:
    raw.pair(name)
    raw.image(name).write_bytes(_truncated(raw.image(name).read_bytes()))


def _truncated_trimap(raw: Raw, name: str) -> None:
    raw.pair(name)
    raw.trimap(name).write_bytes(_truncated(raw.trimap(name).read_bytes()))


def _garbage_image(raw: Raw, name: str) -> None:
    raw.pair(name)
    raw.image(name).write_bytes(b"this is not a picture at all" * 10)


def _trimap_value(value: int) -> Callable[[Raw, str], None]:
    def build(raw: Raw, name: str) -> None:
        _, trimap = raw.pair(name)
        trimap = trimap.copy()
        trimap[:3, :3] = value
        _save(trimap, raw.trimap(name), "PNG")

    return build


def _trimap_rgb(raw: Raw, name: str) -> None:
    _, trimap = raw.pair(name)
    _save(trimap, raw.trimap(name), "PNG", mode="RGB")


def _size_mismatch(raw: Raw, name: str) -> None:
    raw.pair(name, width=90, height=70)
    _save(_trimap(raw.rng, 70, 90), raw.trimap(name), "PNG")


CASES: dict[str, Case] = {
    "png_as_jpg": (_png_as_jpg, "converted", "PNG file named .jpg"),
    "gif_as_jpg": (_gif_as_jpg, "converted", "GIF file named .jpg; palette image (mode P) converted to RGB"),
    "rgba": (_rgba, "converted", "PNG file named .jpg; RGBA image with transparency composited on white"),
    "palette": (_palette, "converted", "PNG file named .jpg; palette image (mode P) converted to RGB"),
    "grayscale": (_grayscale, "converted", "grayscale image (mode L) converted to RGB"),
    "cmyk": (_cmyk, "converted", "CMYK image converted to RGB"),
    "sixteen_bit": (_sixteen_bit, "converted", "PNG file named .jpg; 16-bit image (mode I"),
    "missing_image": (_missing_image, "skipped", "image: missing: missing_image.jpg"),
    "missing_trimap": (_missing_trimap, "skipped", "trimap: missing: missing_trimap.png"),
    "empty_image": (_empty_image, "skipped", "image: empty file: 0 bytes"),
    "empty_trimap": (_empty_trimap, "skipped", "trimap: empty file: 0 bytes"),
    "truncated_jpeg": (_truncated_jpeg, "skipped", "image: truncated or corrupt: image file is truncated"),
    "truncated_trimap": (_truncated_trimap, "skipped", "trimap: "),
    "garbage_image": (
        _garbage_image,
        "skipped",
        "image: not an image: Pillow cannot identify the file as an image",
    ),
    "trimap_zero": (_trimap_value(0), "skipped", "trimap: values outside {1,2,3}: 0"),
    "trimap_seven": (_trimap_value(7), "skipped", "trimap: values outside {1,2,3}: 7"),
    "trimap_rgb": (_trimap_rgb, "skipped", "trimap: wrong mode: mode RGB, expected 8-bit L or P"),
    "size_mismatch": (_size_mismatch, "skipped", "trimap: size mismatch: image 90x70, trimap 70x90 (width x height)"),
}
PREFIX_ONLY = {"sixteen_bit", "truncated_jpeg", "truncated_trimap"}

# List order: val (every 10th trainval name from the first) gets a good, a converted and a skipped pair.
TRAINVAL = [
    "good_00", "png_as_jpg", "gif_as_jpg", "palette", "grayscale", "missing_image", "empty_image",
    "truncated_jpeg", "garbage_image", "trimap_zero",
    "rgba", "good_11", "trimap_seven", "trimap_rgb", "size_mismatch", "good_15", "exif_rotated",
    "palette_trimap", "good_18", "good_19",
    "missing_trimap", "good_21", "good_22",
]  # fmt: skip
TEST = ["good_t0", "cmyk", "sixteen_bit", "empty_trimap", "truncated_trimap", "good_t1"]


def _exif_rotated(raw: Raw, name: str) -> None:
    """A JPEG whose EXIF says 'rotate 90': the stored pixels (and the trimap) must be used as they are."""
    picture, _ = raw.pair(name, width=120, height=80)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(picture).save(raw.image(name), format="JPEG", quality=92, exif=exif)


def _palette_trimap(raw: Raw, name: str) -> None:
    """A trimap stored as a palette PNG whose indices are the values 1/2/3: accepted as is."""
    _, trimap = raw.pair(name)
    palette_image = Image.frombytes("P", (trimap.shape[1], trimap.shape[0]), trimap.tobytes())
    palette_image.putpalette([v for i in range(256) for v in (i, i, i)])
    palette_image.save(raw.trimap(name), format="PNG")
    with Image.open(raw.trimap(name)) as check:
        assert check.mode == "P"


def build_broken_raw(root: Path) -> Raw:
    raw = Raw(root)
    for name in TRAINVAL + TEST:
        if name in CASES:
            CASES[name][0](raw, name)
        elif name == "exif_rotated":
            _exif_rotated(raw, name)
        elif name == "palette_trimap":
            _palette_trimap(raw, name)
        else:
            raw.pair(name)
    raw.pair("unlisted")  # a valid pair in no list: ignored
    raw.image("._good_00").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata: ignored
    raw.trimap("._good_00").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (raw.root / "images" / "good_00.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    raw.lists(TRAINVAL, TEST)
    return raw
