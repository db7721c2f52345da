"""The infer stage: a trained model on a folder of arbitrary images, masks at each image's own size.

For every input image it writes, under the output folder:

- ``<name>_mask.png``: L mode, 0 background / 255 pet, at the image's original
  size in its displayed orientation (EXIF orientation applied);
- ``<name>_panel.png``: image | ground truth (when a trimap is found) |
  probability map | mask | overlay (petseg.plotting.panel).

Photos are read by petseg.data.imaging, exactly as preprocessing reads them
(same RGB conversion and alpha rule, same resize, same JPEG draft decoding when
``jpeg_draft`` is on), but upright. Probabilities come from petseg.predict (the
path evaluation uses, flip TTA included); the probability map is resized
bilinear to the original size and only then thresholded (and post-processed, see petseg.postprocess).

Files that cannot be used are skipped with a one-line message and the run goes
on: non-images, empty files, truncated or corrupt images (truncated JPEGs are
never silently completed), images beyond Pillow's decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``), macOS ``._*`` files, unreadable files, folders
named like images, broken or looping symbolic links, pipes and devices. A run
that finds no readable image at all is an error: nothing is written and the
exit code says so. Outputs are renamed into place, so a symbolic link planted
at an output name is replaced, never written through.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from petseg import paths
from petseg.checkpoint import check_model_name, load_checkpoint
from petseg.data import imaging
from petseg.data.layout import TEST_LIST, TRIMAPS_DIR, building_dir
from petseg.errors import DataError
from petseg.inference.inputs import (
    default_trimaps_dir,
    folder_images,
    named_model,
    output_names,
    raw_test_images,
    resolve_checkpoint,
    shown,
)
from petseg.io import remove_stale_temps
from petseg.metrics import dice_from_counts, pixel_counts
from petseg.plotting.panel import make_panel, save_png
from petseg.postprocess import postprocess_masks
from petseg.predict import Predictor

log = logging.getLogger(__name__)


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


@dataclass
class _Item:
    path: Path
    name: str
    photo: imaging.Photo
    pixels: np.ndarray  # S x S x 3 uint8, the model's input


def read_input(path: Path, size: int, jpeg_draft: bool) -> tuple[imaging.Photo, np.ndarray]:
    """The photo as displayed (for the panel and the mask's size) and the model's pixels, as preprocess makes them."""
    photo = imaging.read_photo(path, upright=True)
    source = photo.rgb
    if jpeg_draft and photo.format == "JPEG" and min(photo.stored_size) >= 2 * size:  # else draft decodes in full
        source = imaging.read_photo(path, upright=True, draft_size=size).rgb
    return photo, imaging.photo_pixels(source, size)


def _ground_truth(trimaps_dir: Path | None, item: _Item) -> np.ndarray | None:
    """The item's trimap in its displayed orientation, or None when there is none or it cannot be used."""
    if trimaps_dir is None:
        return None
    path = trimaps_dir / f"{item.path.stem}.png"
    if not path.is_file():
        return None
    try:
        return imaging.read_trimap(path, item.photo.stored_size, item.photo.transpose)
    except imaging.UnusableFile as problem:
        log.info("note: ground truth %s not used: %s", path, problem)
        return None


def _finish(
    item: _Item,
    probability: torch.Tensor,
    output_dir: Path,
    threshold: float,
    trimaps_dir: Path | None,
    postprocess: str = "none",
) -> Path:
    """Map one probability map to the original size, threshold it (then post-process), write the mask and the panel."""
    width, height = item.photo.rgb.size
    full = F.interpolate(probability[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    mask_bool = postprocess_masks((full > threshold)[None], postprocess)[0].cpu()
    mask = Image.fromarray(mask_bool.numpy().astype(np.uint8) * 255, mode="L")
    trimap = _ground_truth(trimaps_dir, item)
    dice = None
    if trimap is not None:
        counts = pixel_counts(mask_bool[None], torch.from_numpy(imaging.pet_mask(trimap))[None])
        dice = float(dice_from_counts(counts)[0])
    mask_path = output_dir / f"{item.name}_mask.png"
    save_png(mask_path, mask)
    title = f"{item.path.name}   {width}x{height}   threshold {threshold:g}"
    panel = make_panel(item.photo.rgb, probability.cpu().numpy(), mask, trimap, title=title, dice=dice)
    save_png(output_dir / f"{item.name}_panel.png", panel)
    return mask_path


def infer_images(
    checkpoint: str | Path,
    inputs: Sequence[Path],
    output_dir: str | Path,
    *,
    threshold: float = 0.5,
    tta: bool = False,
    postprocess: str = "none",
    jpeg_draft: bool = False,
    trimaps_dir: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
    progress: bool = True,
    source: str = "the input",
    expected_model: str | None = None,
    rebuild: bool = False,
) -> InferenceResult:
    """Predict a mask and a panel for each input image; unusable files are skipped and reported.

    ``postprocess``: what is done to each thresholded mask (petseg.postprocess).
    ``expected_model``: the model the checkpoint must hold. ``rebuild``: the
    output folder is built anew beside its place and swapped in whole, so it
    holds exactly this run's outputs (nothing left from an earlier run), and a
    failed run leaves the previous folder as it was. Raises DataError when no
    input is given or none is a readable image.
    """
    output_dir = Path(output_dir)
    trimaps = Path(trimaps_dir) if trimaps_dir is not None else None
    if not inputs:
        raise DataError(f"{source}: no files to run inference on")
    predictor = Predictor(checkpoint, device, tta=tta)
    if expected_model is not None:
        check_model_name(predictor.checkpoint, checkpoint, expected_model)
    if not rebuild:
        remove_stale_temps(output_dir)  # left by a run that was killed mid-write
    with building_dir(output_dir) if rebuild else contextlib.nullcontext(output_dir) as target:
        result = _infer_all(
            predictor, inputs, Path(target), threshold, jpeg_draft, trimaps, batch_size, progress, postprocess
        )
        result.output_dir, result.written = output_dir, [output_dir / path.name for path in result.written]
        if not result.written:
            raise DataError(f"{source}: no readable image among {len(inputs)} file(s); {result.summary()}")
    return result


def _infer_all(
    predictor: Predictor,
    inputs: Sequence[Path],
    output_dir: Path,
    threshold: float,
    jpeg_draft: bool,
    trimaps: Path | None,
    batch_size: int,
    progress: bool,
    postprocess: str,
) -> InferenceResult:
    size = predictor.image_size
    names = output_names(list(inputs))
    result = InferenceResult(output_dir)
    pending: list[_Item] = []

    def flush() -> None:
        if pending:
            probabilities = predictor.probabilities(np.stack([item.pixels for item in pending]))[:, 0]
            result.written.extend(
                _finish(item, probability, output_dir, threshold, trimaps, postprocess)
                for item, probability in zip(pending, probabilities)
            )
            pending.clear()

    bar = tqdm(inputs, desc="infer", unit="image", disable=not progress, leave=False, dynamic_ncols=True)
    for path in bar:
        try:
            photo, pixels = read_input(path, size, jpeg_draft)
        except imaging.UnusableFile as problem:
            result.skipped.append(Skipped(path, problem.kind, str(problem)))
            message = f"skipped {shown(path)}: {problem}"
            if progress:
                tqdm.write(message, file=sys.stderr)
            else:
                log.info("%s", message)
            continue
        pending.append(_Item(path, names[path], photo, pixels))
        if len(pending) >= batch_size:
            flush()
    flush()
    bar.close()
    return result


def infer_folder(
    checkpoint: str | Path,
    input_dir: str | Path | None,
    output_dir: str | Path | None = None,
    *,
    threshold: float = 0.5,
    tta: bool = False,
    postprocess: str = "none",
    jpeg_draft: bool = False,
    trimaps_dir: str | Path | None = None,
    raw_dir: str | Path = paths.RAW_DIR,
    device: str = "auto",
    progress: bool = True,
    rebuild: bool = False,
) -> InferenceResult:
    """Run :func:`infer_images` on a folder, or on the raw data's test images when ``input_dir`` is None.

    ``checkpoint`` is a file, or a model name (its ``models/<name>/best.pt``,
    which must then hold that model). ``output_dir`` None means
    ``predictions/<model name>``. Ground truth comes from ``trimaps_dir``, else
    from ``annotations/trimaps`` beside the images folder when it exists.
    ``rebuild``: see :func:`infer_images`.
    """
    expected = named_model(checkpoint)
    checkpoint = resolve_checkpoint(checkpoint)
    if input_dir is None:
        inputs, source = raw_test_images(raw_dir), str(Path(raw_dir) / TEST_LIST)
        trimaps = trimaps_dir if trimaps_dir is not None else Path(raw_dir) / TRIMAPS_DIR
    else:
        inputs, source = folder_images(input_dir), str(input_dir)
        trimaps = trimaps_dir if trimaps_dir is not None else default_trimaps_dir(input_dir)
    if trimaps is not None and not Path(trimaps).is_dir():
        raise DataError(f"{trimaps}: trimaps folder not found")
    if output_dir is None:
        output_dir = paths.predictions_dir(expected or load_checkpoint(checkpoint).model_name)
    output_dir = Path(output_dir)
    if input_dir is not None and output_dir.resolve() == Path(input_dir).resolve():
        raise DataError(f"{output_dir}: the output folder must differ from the input folder")
    result = infer_images(
        checkpoint,
        inputs,
        output_dir,
        threshold=threshold,
        tta=tta,
        postprocess=postprocess,
        jpeg_draft=jpeg_draft,
        trimaps_dir=trimaps,
        device=device,
        progress=progress,
        source=source,
        expected_model=expected,
        rebuild=rebuild,
    )
    log.info("infer: %s", result.summary())
    return result
