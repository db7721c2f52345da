"""The infer stage: a trained model on a folder of arbitrary images, masks at each image's own size.

For every input image it writes, under the output folder:

- ``<name>_mask.png``: L mode, 0 background / 255 pet, at the image's original
  size in its displayed orientation (EXIF orientation applied);
- ``<name>_panel.png``: image | ground truth (when a trimap is found) |
  probability map | mask | overlay, labelled, built with PIL so thousands of
  images stay fast.

The model runs at the checkpoint's image size (the image resized bilinear,
as preprocess does); its probability map is resized bilinear to the original
size and only then thresholded. Any mode Pillow reads is converted to 8-bit RGB
(16-bit scaled by 1/257, CMYK and palette converted, alpha composited on white).

Files that cannot be used are skipped with a one-line message and the run goes
on: non-images, empty files, truncated or corrupt images (truncated JPEGs are
never silently completed), images beyond Pillow's decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``), macOS ``._*`` files, unreadable files, folders
named like images, broken or looping symbolic links, pipes and devices. Other
subfolders are not searched (one note names them). A run that finds no
readable image at all is an error: nothing is written and the exit code says so.

Output names are derived from the input file name: the stem with anything but
letters, digits, ``_``, ``-`` and single dots replaced by ``_`` (no ``..``, no
leading dot, at most 100 characters), so every output stays directly inside the
output folder. Inputs whose stems coincide (``a.jpg`` and ``a.png``, or names
that differ only in case or in replaced characters) all get their extension
appended (``a_jpg``, ``a_png``); any remaining clash gets ``_2``, ``_3``, ...
in sorted input order. Outputs are renamed into place, so a symbolic link
planted at an output name is replaced, never written through.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from petseg.checkpoint import load_model
from petseg.device import resolve_device
from petseg.errors import CheckpointError, DataError
from petseg.evaluation import TRAIN_STAGES
from petseg.io import atomic_path, remove_stale_temps
from petseg.metrics import dice_from_counts, pixel_counts
from petseg.params import MODEL_NAMES

log = logging.getLogger(__name__)

RAW_DIR = Path("data/raw/oxford-iiit-pet")
TEST_LIST = Path("annotations/test.txt")
IMAGES_DIR = Path("images")
TRIMAPS_DIR = Path("annotations/trimaps")

MAX_STEM = 100  # characters
MAX_STEM_BYTES = 200  # UTF-8 bytes, leaving room for suffixes
TILE_HEIGHT = 256
MIN_TILE_WIDTH = 96
LABEL_HEIGHT = 18
GAP = 4
OVERLAY_COLOUR = (255, 40, 40)
OVERLAY_ALPHA = 0.45

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


class SkipImage(Exception):
    """An input that cannot be used; ``kind`` groups the summary, the message says why."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass(frozen=True)
class Skipped:
    path: Path
    kind: str
    reason: str


@dataclass
class InferenceResult:
    """What a run wrote and what it skipped, with why."""

    output_dir: Path
    written: list[Path] = field(default_factory=list)  # mask files
    skipped: list[Skipped] = field(default_factory=list)

    def skip_counts(self) -> dict[str, int]:
        return dict(collections.Counter(item.kind for item in self.skipped))

    def summary(self) -> str:
        line = f"wrote {len(self.written)} masks and panels to {self.output_dir}; skipped {len(self.skipped)}"
        if self.skipped:
            line += " (" + ", ".join(f"{count} {kind}" for kind, count in self.skip_counts().items()) + ")"
        return line


# --------------------------------------------------------------------------- inputs


def resolve_checkpoint(model: str | Path, models_dir: str | Path = "models") -> Path:
    """A checkpoint path, or a model name meaning ``models_dir/<name>/best.pt``; it must exist."""
    text = str(model)
    if text in MODEL_NAMES and not Path(text).is_file():
        path = Path(models_dir) / text / "best.pt"
        if not path.is_file():
            stage = TRAIN_STAGES[text]
            raise CheckpointError(f"{path}: checkpoint not found; the {stage} stage makes it (dvc repro {stage})")
        return path
    path = Path(text)
    if not path.is_file():
        names = ", ".join(MODEL_NAMES)
        raise CheckpointError(f"{path}: checkpoint not found (give a checkpoint file or a model name: {names})")
    return path


def read_test_names(raw_dir: str | Path) -> list[str]:
    """Image names in the raw data's ``annotations/test.txt`` (first field of each line; ``#`` comments skipped)."""
    path = Path(raw_dir) / TEST_LIST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: test list not found; the download stage makes it (dvc repro download)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the test list: {exc}") from None
    names = [line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    unsafe = [name for name in names if "/" in name or "\\" in name or name.startswith(".")]
    if unsafe:
        raise DataError(f"{path}: invalid image name {unsafe[0]!r} (a plain file name is expected)")
    return names


def raw_test_images(raw_dir: str | Path) -> list[Path]:
    """The raw data's test images, ``images/<name>.jpg`` for each name of ``test.txt``, in list order."""
    raw_dir = Path(raw_dir)
    return [raw_dir / IMAGES_DIR / f"{name}.jpg" for name in read_test_names(raw_dir)]


def _image_suffixes() -> frozenset[str]:
    Image.init()
    return frozenset(Image.registered_extensions())


def folder_images(input_dir: str | Path) -> list[Path]:
    """The files of ``input_dir``, sorted by name; subfolders are not searched.

    A folder named like an image (``photo.jpg/``) is listed too, so that it is
    reported as skipped; other subfolders are named in one note.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        problem = "input folder not found" if not input_dir.exists() else "not a folder"
        raise DataError(f"{input_dir}: {problem}")
    suffixes = _image_suffixes()
    inputs, subfolders = [], []
    try:
        for entry in input_dir.iterdir():
            if not entry.is_dir():
                inputs.append(entry)
            elif entry.suffix.lower() in suffixes:
                inputs.append(entry)
            else:
                subfolders.append(entry.name)
    except OSError as exc:
        raise DataError(f"{input_dir}: cannot list the input folder: {exc.strerror or exc}") from None
    if subfolders:
        names = ", ".join(shown(Path(name)) for name in sorted(subfolders)[:5])
        more = ", ..." if len(subfolders) > 5 else ""
        log.info("note: %d subfolder(s) of %s not searched: %s%s", len(subfolders), input_dir, names, more)
    return sorted(inputs, key=lambda p: p.name)


def default_trimaps_dir(input_dir: str | Path) -> Path | None:
    """``annotations/trimaps`` beside the images folder (the official layout), when it exists."""
    candidate = Path(input_dir).resolve().parent / TRIMAPS_DIR
    return candidate if candidate.is_dir() else None


# -------------------------------------------------------------------------- naming


def safe_stem(file_name: str) -> str:
    """A file-name stem that is safe to write inside a folder: see the module docstring for the rules."""
    stem = Path(file_name).stem if not file_name.startswith(".") or "." in file_name[1:] else file_name
    stem = re.sub(r"[^\w.\-]+", "_", stem)  # \w: letters and digits of any script, and _
    stem = re.sub(r"\.{2,}", "_", stem)
    stem = stem.lstrip(".-")[:MAX_STEM]
    while len(stem.encode("utf-8")) > MAX_STEM_BYTES:  # file systems limit names in bytes (usually 255)
        stem = stem[:-1]
    return stem.rstrip(". ") or "image"


def output_names(paths: Sequence[Path]) -> dict[Path, str]:
    """A distinct safe output name for each input path (deterministic: depends only on the sorted names)."""
    stems = {path: safe_stem(path.name) for path in paths}
    groups = collections.Counter(stem.casefold() for stem in stems.values())
    names: dict[Path, str] = {}
    used: set[str] = set()
    for path in sorted(paths, key=lambda p: (p.name, str(p))):
        stem = stems[path]
        if groups[stem.casefold()] > 1:
            extension = re.sub(r"[^A-Za-z0-9]+", "_", path.suffix.lstrip("."))[:10]
            stem = f"{stem}_{extension}" if extension else stem
        candidate, number = stem, 2
        while candidate.casefold() in used:
            candidate = f"{stem}_{number}"
            number += 1
        used.add(candidate.casefold())
        names[path] = candidate
    return {path: names[path] for path in paths}


# ------------------------------------------------------------------------- reading


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded mode as 8-bit RGB: 16-bit scaled by 1/257, alpha composited on white, CMYK/palette converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image)
        if mode.startswith("I;16") or (mode == "I" and values.size and values.max() > 255):
            values = values.astype(np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


def orientation_transpose(image: Image.Image) -> Image.Transpose | None:
    """The transpose that shows ``image`` upright according to its EXIF orientation (None: already upright)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # a broken EXIF block does not make the pixels unusable
        return None
    return ORIENTATION_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None


def _not_a_file(path: Path) -> str:
    """Why ``path`` is not a regular file: missing, a broken or looping symlink, a folder, a device or pipe."""
    if path.is_symlink():
        try:
            path.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symbolic link loop"
            if exc.errno == errno.ENOENT:
                return f"a broken symbolic link (its target {shown(Path(os.readlink(path)))} does not exist)"
            return f"a symbolic link that cannot be followed ({exc.strerror or exc})"
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "a folder, not an image file (subfolders are not searched)"
    return "not a regular file (a device, pipe or socket)"


def load_image(path: Path) -> tuple[Image.Image, tuple[int, int], Image.Transpose | None]:
    """Decode one input: (RGB image as displayed, stored size, the orientation transpose applied).

    Raises :class:`SkipImage` for anything that is not a usable image.
    """
    if path.name.startswith("._"):
        raise SkipImage("macOS metadata file", "'._*' files hold resource forks, not images")
    try:
        if not path.is_file():
            raise SkipImage("not a file", _not_a_file(path))
        size = path.stat().st_size
    except OSError as exc:
        raise SkipImage("unreadable", exc.strerror or str(exc)) from None
    if size == 0:
        raise SkipImage("empty file", "0 bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                stored_size = image.size
                image.load()
                transpose = orientation_transpose(image)
                try:
                    upright = ImageOps.exif_transpose(image)
                except Exception as exc:  # a broken EXIF block does not make the pixels unusable
                    log.info("note: %s: EXIF orientation ignored (%s)", path, exc)
                    upright, transpose = image, None
                rgb = to_rgb(upright)
                rgb.load()
        except UnidentifiedImageError:
            raise SkipImage("not an image", "Pillow cannot identify the file as an image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise SkipImage("too large", f"{exc}") from None
        except OSError as exc:
            message = str(exc).replace(str(path), path.name)
            kind = "truncated or corrupt" if exc.errno is None else "unreadable"
            raise SkipImage(kind, message or type(exc).__name__) from None
        except Exception as exc:  # any other decoder failure skips the file, never ends the run
            raise SkipImage("unreadable", f"{type(exc).__name__}: {exc}") from None
    return rgb, stored_size, transpose


def load_trimap(path: Path, stored_size: tuple[int, int], transpose: Image.Transpose | None) -> np.ndarray | None:
    """The trimap (1 pet, 2 background, 3 boundary) in the image's displayed orientation, or None when unusable."""
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as trimap:
                if trimap.mode not in ("L", "P"):
                    raise ValueError(f"mode {trimap.mode}, expected 8-bit L or P")
                if trimap.size != stored_size:
                    raise ValueError(f"size {trimap.size} differs from the image's {stored_size}")
                trimap.load()
                if transpose is not None:
                    trimap = trimap.transpose(transpose)
                values = np.array(trimap, dtype=np.uint8)
    except Exception as exc:
        log.info("note: ground truth %s not used: %s", path, exc)
        return None
    if values.size and (values.min() < 1 or values.max() > 3):
        log.info("note: ground truth %s not used: values outside {1, 2, 3}", path)
        return None
    return values


# --------------------------------------------------------------------------- panels


def _viridis_lut() -> np.ndarray:
    anchors = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)
    positions = np.linspace(0, 255, len(anchors))
    levels = np.arange(256)
    return np.stack([np.interp(levels, positions, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


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


def panel_size(width: int, height: int, with_truth: bool) -> tuple[int, int]:
    """(width, height) of the panel of a ``width`` x ``height`` image: 4 tiles, 5 with the ground truth."""
    tiles = 5 if with_truth else 4
    tile_width, tile_height = tile_size(width, height)
    return tiles * tile_width + (tiles - 1) * GAP, 2 * LABEL_HEIGHT + tile_height


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


def shown(path: Path) -> str:
    """A path for a one-line message: quoted when its name holds unprintable characters."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


# ------------------------------------------------------------------------ inference


@dataclass
class _Item:
    path: Path
    name: str
    image: Image.Image
    stored_size: tuple[int, int]
    transpose: Image.Transpose | None
    model_input: np.ndarray  # S x S x 3 uint8


@torch.inference_mode()
def _probabilities(model: torch.nn.Module, items: list[_Item], device: torch.device) -> torch.Tensor:
    batch = torch.from_numpy(np.stack([item.model_input for item in items])).to(device)
    images = batch.permute(0, 3, 1, 2).float().div_(255.0)
    return torch.sigmoid(model(images).float())[:, 0]


def _finish(
    item: _Item,
    probability: torch.Tensor,
    output_dir: Path,
    threshold: float,
    trimaps_dir: Path | None,
) -> Path:
    """Map one probability map to the original size, threshold it, write the mask and the panel."""
    width, height = item.image.size
    full = F.interpolate(probability[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    mask_bool = full > threshold
    mask = Image.fromarray(mask_bool.cpu().numpy().astype(np.uint8) * 255, mode="L")
    trimap = None
    if trimaps_dir is not None:
        trimap = load_trimap(trimaps_dir / f"{item.path.stem}.png", item.stored_size, item.transpose)
    dice = None
    if trimap is not None:
        if trimap.shape != (height, width):
            trimap = None
        else:
            counts = pixel_counts(mask_bool[None].cpu(), torch.from_numpy(trimap != 2)[None])
            dice = float(dice_from_counts(counts)[0])
    mask_path = output_dir / f"{item.name}_mask.png"
    save_png(mask_path, mask)
    title = f"{item.path.name}   {width}x{height}   threshold {threshold:g}"
    panel = make_panel(item.image, probability.cpu().numpy(), mask, trimap, title=title, dice=dice)
    save_png(output_dir / f"{item.name}_panel.png", panel)
    return mask_path


def infer_images(
    checkpoint: str | Path,
    inputs: Sequence[Path],
    output_dir: str | Path,
    *,
    threshold: float = 0.5,
    trimaps_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
    progress: bool = True,
    source: str = "the input",
) -> InferenceResult:
    """Predict a mask and a panel for each input image; unusable files are skipped and reported.

    Raises DataError when no input is given or none is a readable image.
    """
    output_dir = Path(output_dir)
    trimaps = Path(trimaps_dir) if trimaps_dir is not None else None
    if not inputs:
        raise DataError(f"{source}: no files to run inference on")
    torch_device = resolve_device(device, param="--device")
    model, state = load_model(checkpoint, torch_device)
    if torch_device.type in ("cpu", "cuda"):
        model = model.to(memory_format=torch.channels_last)
    size = int(state["image_size"])
    names = output_names(list(inputs))
    remove_stale_temps(output_dir)  # left by a run that was killed mid-write
    result = InferenceResult(output_dir)
    pending: list[_Item] = []

    def flush() -> None:
        if not pending:
            return
        probabilities = _probabilities(model, pending, torch_device)
        for item, probability in zip(pending, probabilities):
            result.written.append(_finish(item, probability, output_dir, threshold, trimaps))
        pending.clear()

    bar = tqdm(inputs, desc="infer", unit="image", disable=not progress, leave=False, dynamic_ncols=True)
    for path in bar:
        try:
            image, stored_size, transpose = load_image(path)
        except SkipImage as skip:
            result.skipped.append(Skipped(path, skip.kind, str(skip)))
            message = f"skipped {shown(path)}: {skip}"
            if progress:
                tqdm.write(message, file=sys.stderr)
            else:
                log.info("%s", message)
            continue
        model_input = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
        pending.append(_Item(path, names[path], image, stored_size, transpose, model_input))
        if len(pending) >= batch_size:
            flush()
    flush()
    bar.close()
    if not result.written:
        raise DataError(f"{source}: no readable image among {len(inputs)} file(s); {result.summary()}")
    return result


def infer_folder(
    checkpoint: str | Path,
    input_dir: str | Path | None,
    output_dir: str | Path | None = None,
    *,
    threshold: float = 0.5,
    trimaps_dir: str | Path | None = None,
    raw_dir: str | Path = RAW_DIR,
    device: str = "auto",
    progress: bool = True,
) -> InferenceResult:
    """Run :func:`infer_images` on a folder, or on the raw data's test images when ``input_dir`` is None.

    ``output_dir`` None means ``predictions/<model name of the checkpoint>``.
    Ground truth comes from ``trimaps_dir``, else from ``annotations/trimaps``
    beside the images folder when it exists.
    """
    checkpoint = resolve_checkpoint(checkpoint)
    if input_dir is None:
        inputs = raw_test_images(raw_dir)
        source = str(Path(raw_dir) / TEST_LIST)
        trimaps = trimaps_dir if trimaps_dir is not None else Path(raw_dir) / TRIMAPS_DIR
    else:
        inputs = folder_images(input_dir)
        source = str(input_dir)
        trimaps = trimaps_dir if trimaps_dir is not None else default_trimaps_dir(input_dir)
    if trimaps is not None and not Path(trimaps).is_dir():
        raise DataError(f"{trimaps}: trimaps folder not found")
    if output_dir is None:
        from petseg.checkpoint import load_checkpoint

        output_dir = Path("predictions") / load_checkpoint(checkpoint)["model_name"]
    output_dir = Path(output_dir)
    if input_dir is not None and output_dir.resolve() == Path(input_dir).resolve():
        raise DataError(f"{output_dir}: the output folder must differ from the input folder")
    result = infer_images(
        checkpoint, inputs, output_dir, threshold=threshold, trimaps_dir=trimaps,
        device=device, progress=progress, source=source,
    )  # fmt: skip
    log.info("infer: %s", result.summary())
    return result
