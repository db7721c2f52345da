"""The evaluate stage: each model's best checkpoint on the test cache, as numbers to diff and pictures to look at.

Per-image Dice is 2|P∩G| / (|P| + |G|), where P holds the pixels whose pet
probability exceeds the threshold and G the true pet pixels (trimap pet or
boundary); an image whose prediction and truth are both empty scores 1. IoU is
|P∩G| / |P∪G| (also 1 when both are empty). Pooled Dice counts the pixels of
all test images at once, so large pets weigh more; pixel accuracy is the share
of all test pixels classified correctly.

Evaluation runs batched under ``torch.inference_mode`` in plain float32 (no
autocast, no TF32, deterministic cuDNN), so its numbers are reproducible and
match an independent float32 recomputation from the checkpoint and the cache.
With ``tta`` the probability map is the average of the probability maps of the
image and of its horizontal flip (flipped back), thresholded afterwards.

Outputs, per model: a section of ``metrics/evaluate.json``, the per-image table
``plots/evaluate/<model>.csv`` (``name,dice,iou`` in cache order, floats written
with ``repr`` so they read back exactly) and ``plots/evaluate/<model>_worst.png``,
a gallery of the ``n_worst`` lowest-Dice test images (image, truth, prediction).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petseg.checkpoint import load_model
from petseg.data.cache import Split, load_split
from petseg.device import resolve_device
from petseg.errors import CheckpointError, DataError
from petseg.io import atomic_path, load_json, remove_stale_temps, write_json, write_text
from petseg.metrics import TN, TP, dice_from_counts, iou_from_counts, pixel_counts, probability_mask
from petseg.params import MODEL_NAMES

log = logging.getLogger(__name__)

# the pipeline stage that writes models/<name>/best.pt
TRAIN_STAGES = {"unet": "train_unet", "resnet34_unet": "train_resnet"}

# one gallery cell (width, height) in pixels; a gallery is 3 cells wide and one row per image
GALLERY_CELL_PX = (200, 250)
GALLERY_DPI = 100


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate.*`` params, typed."""

    threshold: float = 0.5
    tta: bool = False
    n_worst: int = 8
    batch_size: int = 64

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> EvaluateConfig:
        return cls(**section)


@dataclass
class ModelEvaluation:
    """One model's test results: per-image scores and pixel counts, and the summary written to the metrics file."""

    model_name: str
    names: list[str]
    counts: np.ndarray  # N x 4 int64: tp, fp, fn, tn
    dice: np.ndarray  # N float64
    iou: np.ndarray  # N float64
    summary: dict[str, Any]
    packed_masks: np.ndarray  # N x ceil(H*W/8) uint8: the predicted masks, np.packbits per image
    mask_shape: tuple[int, int]

    def predicted_masks(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The predicted masks (bool K x H x W) of the given images, exactly as they were scored."""
        height, width = self.mask_shape
        bits = np.unpackbits(self.packed_masks[np.asarray(indices, dtype=np.int64)], axis=1, count=height * width)
        return bits.reshape(-1, height, width).astype(bool)


# ----------------------------------------------------------------------- predicting


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Plain, deterministic float32 on CUDA for the duration (no TF32, no autotuned kernels)."""
    if device.type != "cuda":
        yield
        return
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic,
        ) = saved


def image_batch(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W in [0, 1] on ``device`` (channels_last in memory)."""
    batch = torch.from_numpy(np.array(images, dtype=np.uint8)).to(device)  # a writable copy of the memmap rows
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


@torch.inference_mode()
def predict_probabilities(model: torch.nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Pet probabilities (float32 N x 1 x H x W) for float images in [0, 1].

    With ``tta`` the result is the average of sigmoid(model(x)) and the
    horizontal flip of sigmoid(model(flip(x))): flip test-time augmentation.
    """
    probabilities = torch.sigmoid(model(images).float())
    if tta:
        flipped = torch.sigmoid(model(images.flip(-1)).float()).flip(-1)
        probabilities = (probabilities + flipped) / 2
    return probabilities


@torch.inference_mode()
def predict_masks(model: torch.nn.Module, images: torch.Tensor, threshold: float, tta: bool = False) -> torch.Tensor:
    """Boolean pet masks N x 1 x H x W: probability > threshold (see :func:`predict_probabilities`)."""
    if not tta:
        return probability_mask(model(images), threshold)
    return predict_probabilities(model, images, tta=True) > threshold


# ------------------------------------------------------------------------- scoring


def summarize(counts: np.ndarray, dice: np.ndarray, iou: np.ndarray) -> dict[str, Any]:
    """Aggregate per-image scores and pixel counts into the metrics of one model.

    ``dice_std`` is the population standard deviation (ddof 0); ``dice_pooled``
    is Dice on the summed counts; ``pixel_accuracy`` is (tp + tn) / all pixels.
    """
    if len(dice) == 0:
        raise DataError("no test images to evaluate")
    total = counts.sum(axis=0)
    pooled = float(dice_from_counts(torch.from_numpy(total)).item())
    return {
        "dice_mean": float(np.mean(dice)),
        "dice_median": float(np.median(dice)),
        "dice_std": float(np.std(dice)),
        "dice_min": float(np.min(dice)),
        "dice_max": float(np.max(dice)),
        "iou_mean": float(np.mean(iou)),
        "dice_pooled": pooled,
        "pixel_accuracy": float((total[TP] + total[TN]) / total.sum()),
        "n_images": int(len(dice)),
    }


def checkpoint_path(models_dir: str | Path, model_name: str) -> Path:
    """``models_dir/<model>/best.pt``; missing, it is an error that names the stage that makes it."""
    path = Path(models_dir) / model_name / "best.pt"
    if not path.is_file():
        stage = TRAIN_STAGES.get(model_name, f"train_{model_name}")
        raise CheckpointError(f"{path}: checkpoint not found; the {stage} stage makes it (dvc repro {stage})")
    return path


def evaluate_checkpoint(
    path: str | Path,
    split: Split,
    config: EvaluateConfig,
    device: torch.device,
    *,
    expected_model: str | None = None,
) -> ModelEvaluation:
    """Score one checkpoint on a cache split: per-image counts, Dice and IoU, and their summary."""
    path = Path(path)
    model, checkpoint = load_model(path, device)
    name = checkpoint["model_name"]
    if expected_model is not None and name != expected_model:
        raise CheckpointError(f"{path}: holds a {name} model, expected {expected_model}")
    if int(checkpoint["image_size"]) != split.image_size:
        raise CheckpointError(
            f"{path}: trained on {checkpoint['image_size']}px images but the test cache {split.directory} holds "
            f"{split.image_size}px images; re-run training on the current cache (dvc repro)"
        )
    if len(split) == 0:
        raise DataError(f"{split.directory}: the test split is empty; nothing to evaluate")
    if device.type in ("cpu", "cuda"):
        model = model.to(memory_format=torch.channels_last)

    chunks, packed = [], []
    with exact_float32(device):
        for start in range(0, len(split), config.batch_size):
            stop = min(start + config.batch_size, len(split))
            images = image_batch(split.images[start:stop], device)
            truth = torch.from_numpy(np.array(split.masks[start:stop], dtype=np.uint8)).to(device)
            predicted = predict_masks(model, images, config.threshold, config.tta)
            chunks.append(pixel_counts(predicted[:, 0], truth).cpu())
            packed.append(np.packbits(predicted.flatten(1).cpu().numpy(), axis=1))
    counts_tensor = torch.cat(chunks)
    dice = dice_from_counts(counts_tensor).numpy()
    iou = iou_from_counts(counts_tensor).numpy()
    counts = counts_tensor.numpy()
    summary = summarize(counts, dice, iou)
    summary.update(
        {
            "threshold": float(config.threshold),
            "tta": bool(config.tta),
            "checkpoint_epoch": int(checkpoint["epoch"]),
            "checkpoint_val_dice": float(checkpoint["val_dice"]) if "val_dice" in checkpoint else None,
        }
    )
    size = split.image_size
    return ModelEvaluation(name, list(split.names), counts, dice, iou, summary, np.concatenate(packed), (size, size))


# ------------------------------------------------------------------------- outputs


def write_per_image_csv(path: str | Path, names: Sequence[str], dice: np.ndarray, iou: np.ndarray) -> None:
    """The per-image table ``name,dice,iou`` (cache order; ``repr`` floats read back exactly)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "dice", "iou"])
    for name, d, i in zip(names, dice, iou):
        writer.writerow([name, repr(float(d)), repr(float(i))])
    write_text(path, buffer.getvalue())


def worst_indices(dice: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` lowest Dice scores, worst first; ties keep cache order."""
    return np.argsort(dice, kind="stable")[: max(0, min(n, len(dice)))]


def gallery_pixel_size(n_images: int) -> tuple[int, int]:
    """(width, height) in pixels of a gallery with ``n_images`` rows."""
    return 3 * GALLERY_CELL_PX[0], n_images * GALLERY_CELL_PX[1]


def error_image(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB picture of a prediction: correct pet white, false pet red, missed pet blue, background black."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    picture = np.zeros(predicted.shape + (3,), np.uint8)
    picture[predicted & truth] = (255, 255, 255)
    picture[predicted & ~truth] = (230, 40, 40)
    picture[~predicted & truth] = (40, 90, 255)
    return picture


def save_worst_gallery(
    path: str | Path,
    model_name: str,
    images: np.ndarray,
    truths: np.ndarray,
    predictions: np.ndarray,
    names: Sequence[str],
    dice: Sequence[float],
) -> None:
    """A PNG with one row per image: the image (name, Dice), the true mask, the prediction coloured by error."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = len(names)
    width, height = gallery_pixel_size(rows)
    figsize = (width / GALLERY_DPI, height / GALLERY_DPI)
    fig, axes = plt.subplots(rows, 3, figsize=figsize, dpi=GALLERY_DPI, squeeze=False)
    try:
        for row in range(rows):
            left, middle, right = axes[row]
            left.imshow(images[row], interpolation="nearest")
            left.set_title(f"{names[row]}\nDice {dice[row]:.3f}", fontsize=8)
            middle.imshow(truths[row], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            middle.set_title("truth", fontsize=8)
            right.imshow(error_image(predictions[row], truths[row]), interpolation="nearest")
            right.set_title("prediction\n(red: false pet, blue: missed)", fontsize=8)
            for axis in axes[row]:
                axis.set_axis_off()
        fig.suptitle(f"{model_name}: {rows} worst test images", fontsize=9)
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=1 - 0.35 / rows, hspace=0.45, wspace=0.05)
        with atomic_path(path) as temp:
            fig.savefig(temp, format="png", dpi=GALLERY_DPI)
    finally:
        plt.close(fig)


def write_gallery(path: str | Path, evaluation: ModelEvaluation, split: Split, n_worst: int) -> None:
    """Draw the ``n_worst`` lowest-Dice images with their scored predictions; ``n_worst`` 0 removes the gallery."""
    path = Path(path)
    chosen = worst_indices(evaluation.dice, n_worst)
    if len(chosen) == 0:
        path.unlink(missing_ok=True)
        return
    save_worst_gallery(
        path,
        evaluation.model_name,
        np.asarray(split.images[chosen]),
        np.asarray(split.masks[chosen]),
        evaluation.predicted_masks(chosen),
        [evaluation.names[i] for i in chosen],
        [float(evaluation.dice[i]) for i in chosen],
    )


def merge_report(path: str | Path, sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The metrics file's content after replacing ``sections``; other models' sections already there are kept."""
    path = Path(path)
    report: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = load_json(path)
            if isinstance(existing, dict):
                report.update(existing)
        except DataError as exc:
            log.warning("%s; replacing it", exc)
    report.update(sections)
    ordered = {name: report[name] for name in MODEL_NAMES if name in report}
    ordered.update({name: value for name, value in report.items() if name not in ordered})
    return ordered


def evaluate_models(
    model_names: Sequence[str],
    config: EvaluateConfig,
    *,
    cache_dir: str | Path = "data/cache",
    models_dir: str | Path = "models",
    metrics_path: str | Path = "metrics/evaluate.json",
    plots_dir: str | Path = "plots/evaluate",
    device: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Evaluate each model's ``best.pt`` on the test cache and write metrics, per-image tables and galleries.

    All checkpoints must exist before any work starts, and every model is scored
    before anything is written, so a bad checkpoint leaves all outputs as they
    were. The metrics file keeps the sections of models not evaluated in this
    call. Returns the new sections.
    """
    torch_device = resolve_device(device, param="--device")
    paths = {name: checkpoint_path(models_dir, name) for name in model_names}
    split = load_split(cache_dir, "test")
    evaluations = {
        name: evaluate_checkpoint(path, split, config, torch_device, expected_model=name) for name, path in paths.items()
    }
    plots_dir = Path(plots_dir)
    for directory in (plots_dir, Path(metrics_path).parent):
        remove_stale_temps(directory)  # left by a run that was killed mid-write
    sections: dict[str, dict[str, Any]] = {}
    for name, evaluation in evaluations.items():
        write_per_image_csv(plots_dir / f"{name}.csv", evaluation.names, evaluation.dice, evaluation.iou)
        write_gallery(plots_dir / f"{name}_worst.png", evaluation, split, config.n_worst)
        sections[name] = evaluation.summary
        s = evaluation.summary
        log.info(
            "%s: Dice mean %.4f median %.4f (min %.4f, max %.4f), IoU %.4f, pooled Dice %.4f, "
            "pixel accuracy %.4f on %d test images (checkpoint epoch %d%s)",
            name, s["dice_mean"], s["dice_median"], s["dice_min"], s["dice_max"], s["iou_mean"],
            s["dice_pooled"], s["pixel_accuracy"], s["n_images"], s["checkpoint_epoch"],
            ", flip TTA" if config.tta else "",
        )  # fmt: skip
    write_json(metrics_path, merge_report(metrics_path, sections))
    return sections
