"""The one reader of photos and trimaps, and the one conversion of their pixels for the models.

Preprocessing, inference and the tests all open images here, so the same file
gives the same pixels everywhere:

- any mode Pillow decodes becomes 8-bit RGB the same way: 16-bit scaled by
  1/257, CMYK, palette and grayscale converted, and transparency composited on
  white (the one alpha rule: a transparent pixel has no colour of its own, so
  it is shown as a viewer shows it on a white page);
- photos are resized bilinear and trimaps nearest to the model's square size;
  JPEGs may decode at a reduced scale first (libjpeg's draft mode) when the
  target is at most half their size, as ``preprocess.jpeg_draft`` asks;
- trimaps must be 8-bit (L or P), of the photo's size, with values 1 (pet),
  2 (background) and 3 (boundary); the pet mask is trimap != 2;
- uint8 N x H x W x 3 pixels become the models' input, float N x 3 x H x W in
  [0, 1], in :func:`as_model_input` only.

A file that cannot be used raises :class:`UnusableFile` with a short ``kind``
(for summaries) and the reason, never the file's full path (callers name it).
This module imports no torch (the preprocess stage never loads it).
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

TRIMAP_VALUES = (1, 2, 3)  # pet, background, boundary
BACKGROUND = 2
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
WHITE = (255, 255, 255, 255)

# EXIF orientation -> the transpose that displays the image upright (as ImageOps.exif_transpose applies it)
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class UnusableFile(Exception):
    """A photo or trimap that cannot be used: ``kind`` groups it in summaries, ``detail`` says why."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind, self.detail = kind, detail


@dataclass
class Photo:
    """A decoded photo as 8-bit RGB, with what was done to get there."""

    rgb: Image.Image
    stored_size: tuple[int, int]  # (width, height) as stored in the file, before any EXIF rotation
    transpose: Image.Transpose | None = None  # the EXIF rotation applied (upright reads only)
    notes: list[str] = field(
        default_factory=list
    )  # conversions, e.g. "RGBA image with transparency composited on white"
    format: str | None = None  # as Pillow identified the file: JPEG, PNG, ...


def check_file(path: Path) -> None:
    """Raise UnusableFile unless ``path`` is a non-empty regular file (links followed)."""
    try:
        status = os.stat(path)
    except OSError as exc:
        if path.is_symlink():
            if exc.errno == errno.ELOOP:
                raise UnusableFile("not a file", "a symbolic link loop") from None
            if exc.errno == errno.ENOENT:
                raise UnusableFile(
                    "not a file", f"a broken symbolic link (its target {os.readlink(path)} does not exist)"
                ) from None
        if exc.errno == errno.ENOENT:
            raise UnusableFile("missing", path.name) from None
        raise UnusableFile("unreadable", exc.strerror or str(exc)) from None
    if stat.S_ISDIR(status.st_mode):
        raise UnusableFile("not a file", "a folder, not an image file")
    if not stat.S_ISREG(status.st_mode):
        raise UnusableFile("not a file", "not a regular file (a device, pipe or socket)")
    if status.st_size == 0:
        raise UnusableFile("empty file", "0 bytes")


def _decoder_failure(exc: Exception, path: Path) -> UnusableFile:
    message = str(exc).replace(str(path), path.name) or type(exc).__name__
    if isinstance(exc, UnidentifiedImageError):
        return UnusableFile("not an image", "Pillow cannot identify the file as an image")
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return UnusableFile("too large", message)
    if isinstance(exc, OSError) and exc.errno is None:
        return UnusableFile("truncated or corrupt", message)
    return UnusableFile("unreadable", f"{type(exc).__name__}: {message}")


def to_rgb(image: Image.Image, notes: list[str] | None = None) -> Image.Image:
    """Any decoded mode as 8-bit RGB (the module docstring's rules); what was done is appended to ``notes``."""
    notes = [] if notes is None else notes
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "PA"
    if mode in ALPHA_MODES:
        notes.append(f"{'palette' if mode == 'PA' else mode} image with transparency composited on white")
        return Image.alpha_composite(Image.new("RGBA", image.size, WHITE), image.convert("RGBA")).convert("RGB")
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image)
        if mode.startswith("I;16") or (mode == "I" and values.size and values.max() > 255):
            values = values.astype(np.float64) / 257.0
            notes.append(f"16-bit image (mode {mode}) scaled to 8-bit RGB")
        else:
            notes.append(f"{mode} image converted to 8-bit RGB")
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    what = {"P": "palette image (mode P)", "L": "grayscale image (mode L)", "1": "1-bit image"}.get(
        mode, f"{mode} image"
    )
    notes.append(f"{what} converted to RGB")
    return image.convert("RGB")


def _orientation(image: Image.Image) -> Image.Transpose | None:
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels unusable
        return None
    return ORIENTATION_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None


def read_photo(path: str | Path, *, upright: bool = False, draft_size: int | None = None) -> Photo:
    """Decode one photo as RGB.

    ``upright`` applies its EXIF orientation (inference shows photos as they
    are displayed; training uses stored pixel order, like the trimaps).
    ``draft_size`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale while both sides
    stay at least that size.
    """
    path = Path(path)
    if path.name.startswith("._"):
        raise UnusableFile("macOS metadata file", "'._*' files hold resource forks, not images")
    check_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd EXIF or palette transparency: not our concern
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                photo = Photo(image, image.size, format=image.format)
                expected = Image.registered_extensions().get(path.suffix.lower())
                if image.format and expected and image.format != expected:
                    photo.notes.append(f"{image.format} file named {path.suffix}")
                if draft_size is not None and image.format == "JPEG":
                    image.draft("RGB", (draft_size, draft_size))
                image.load()
                shown = image
                if upright:
                    photo.transpose = _orientation(image)
                    shown = image.transpose(photo.transpose) if photo.transpose is not None else image
                photo.rgb = to_rgb(shown, photo.notes)
                photo.rgb.load()
        except Exception as exc:  # noqa: BLE001 - every decoder failure makes the file unusable, with its reason
            raise _decoder_failure(exc, path) from None
    return photo


def read_trimap(path: str | Path, photo_size: tuple[int, int], transpose: Image.Transpose | None = None) -> np.ndarray:
    """The trimap (uint8, 1 pet / 2 background / 3 boundary) of a photo of ``photo_size`` (stored width, height)."""
    path = Path(path)
    check_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as trimap:
                if trimap.mode not in ("L", "P"):
                    raise UnusableFile("wrong mode", f"mode {trimap.mode}, expected 8-bit L or P")
                if trimap.size != photo_size:
                    raise UnusableFile(
                        "size mismatch",
                        f"image {photo_size[0]}x{photo_size[1]}, trimap "
                        f"{trimap.size[0]}x{trimap.size[1]} (width x height)",
                    )
                trimap.load()
                values = np.array(trimap.transpose(transpose) if transpose is not None else trimap, dtype=np.uint8)
        except UnusableFile:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _decoder_failure(exc, path) from None
    counts = np.bincount(values.ravel(), minlength=256)
    counts[list(TRIMAP_VALUES)] = 0
    if counts.any():
        bad = ", ".join(str(v) for v in np.flatnonzero(counts).tolist())
        raise UnusableFile("values outside {1,2,3}", bad)
    return values


def photo_pixels(rgb: Image.Image, size: int) -> np.ndarray:
    """The model's view of a photo: size x size x 3 uint8, resized bilinear."""
    return np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def trimap_pixels(trimap: np.ndarray, size: int) -> np.ndarray:
    """A trimap at size x size, resized nearest (values stay 1, 2, 3)."""
    return np.asarray(Image.fromarray(trimap).resize((size, size), Image.NEAREST), dtype=np.uint8)


def pet_mask(trimap: np.ndarray) -> np.ndarray:
    """The binary truth: pet and boundary are pet (1), background is 0."""
    return (trimap != BACKGROUND).view(np.uint8)


def as_model_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 pixels (on any device) -> float32 N x 3 x H x W in [0, 1], channels_last in memory."""
    return pixels.permute(0, 3, 1, 2).float().div_(255.0)
