"""What inference runs on, and what its outputs are called.

Inputs are the files of one folder (subfolders are not searched; one note
names them), or the raw data's test images (``annotations/test.txt``). A model
is a checkpoint file or a model name meaning its ``models/<name>/best.pt``.

Output names are derived from the input file name: the stem with anything but
letters, digits, ``_``, ``-`` and single dots replaced by ``_`` (no ``..``, no
leading dot, at most 100 characters), so every output stays directly inside the
output folder. Inputs whose stems coincide (``a.jpg`` and ``a.png``, or names
that differ only in case or in replaced characters) all get their extension
appended (``a_jpg``, ``a_png``); any remaining clash gets ``_2``, ``_3``, ...
in sorted input order.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from petseg import paths
from petseg.data.layout import TEST_LIST, TRIMAPS_DIR, image_path, read_list
from petseg.errors import CheckpointError, DataError
from petseg.models import MODEL_NAMES

log = logging.getLogger(__name__)

MAX_STEM = 100  # characters
MAX_STEM_BYTES = 200  # UTF-8 bytes, leaving room for suffixes


def named_model(model: str | Path) -> str | None:
    """The model name ``model`` stands for (a registry name that is not a file), or None for a checkpoint file."""
    text = str(model)
    return text if text in MODEL_NAMES and not Path(text).is_file() else None


def resolve_checkpoint(model: str | Path, models_dir: str | Path = paths.MODELS_DIR) -> Path:
    """A checkpoint path, or a model name meaning ``models_dir/<name>/best.pt``; it must exist."""
    name = named_model(model)
    if name is not None:
        return paths.best_checkpoint(name, models_dir)
    path = Path(model)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found (give a checkpoint file or a model name: {', '.join(MODEL_NAMES)})"
        )
    return path


def raw_test_images(raw_dir: str | Path) -> list[Path]:
    """The raw data's test images, ``images/<name>.jpg`` for each name of ``test.txt``, in list order."""
    return [image_path(raw_dir, entry.name) for entry in read_list(Path(raw_dir) / TEST_LIST)]


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


def output_names(inputs: Sequence[Path]) -> dict[Path, str]:
    """A distinct safe output name for each input path (deterministic: depends only on the sorted names)."""
    stems = {path: safe_stem(path.name) for path in inputs}
    groups = collections.Counter(stem.casefold() for stem in stems.values())
    names: dict[Path, str] = {}
    used: set[str] = set()
    for path in sorted(inputs, key=lambda p: (p.name, str(p))):
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
    return {path: names[path] for path in inputs}


def shown(path: Path) -> str:
    """A path for a one-line message: quoted when its name holds unprintable characters."""
    text = str(path)
    return text if text.isprintable() else ascii(text)
