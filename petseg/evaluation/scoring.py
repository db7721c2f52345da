"""Scoring one checkpoint on the test cache: per-image pixel counts, Dice and IoU, and their summary.

Per-image Dice is 2|P∩G| / (|P| + |G|), where P holds the pixels whose pet
probability exceeds the threshold and G the true pet pixels (trimap pet or
boundary); an image whose prediction and truth are both empty scores 1. IoU is
|P∩G| / |P∪G| (also 1 when both are empty). Pooled Dice counts the pixels of
all test images at once, so large pets weigh more; pixel accuracy is the share
of all test pixels classified correctly. Probabilities come from
petseg.predict, in exact float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petseg.data.cache import Split
from petseg.errors import CheckpointError, DataError
from petseg.metrics import TN, TP, dice_from_counts, iou_from_counts, pixel_counts
from petseg.params import EvaluateParams
from petseg.predict import Predictor


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


def summarize(counts: np.ndarray, dice: np.ndarray, iou: np.ndarray) -> dict[str, Any]:
    """Aggregate per-image scores and pixel counts into the metrics of one model.

    ``dice_std`` is the population standard deviation (ddof 0); ``dice_pooled``
    is Dice on the summed counts; ``pixel_accuracy`` is (tp + tn) / all pixels.
    """
    if len(dice) == 0:
        raise DataError("no test images to evaluate")
    total = counts.sum(axis=0)
    return {
        "dice_mean": float(np.mean(dice)),
        "dice_median": float(np.median(dice)),
        "dice_std": float(np.std(dice)),
        "dice_min": float(np.min(dice)),
        "dice_max": float(np.max(dice)),
        "iou_mean": float(np.mean(iou)),
        "dice_pooled": float(dice_from_counts(torch.from_numpy(total)).item()),
        "pixel_accuracy": float((total[TP] + total[TN]) / total.sum()),
        "n_images": int(len(dice)),
    }


def evaluate_checkpoint(
    path: str | Path,
    split: Split,
    config: EvaluateParams,
    device: str | torch.device = "auto",
    *,
    expected_model: str | None = None,
) -> ModelEvaluation:
    """Score one checkpoint on a cache split: per-image counts, Dice and IoU, and their summary."""
    predictor = Predictor(path, device, tta=config.tta)
    checkpoint = predictor.checkpoint
    name = checkpoint.model_name
    if expected_model is not None and name != expected_model:
        raise CheckpointError(f"{path}: holds a {name} model, expected {expected_model}")
    if checkpoint.image_size != split.image_size:
        raise CheckpointError(
            f"{path}: trained on {checkpoint.image_size}px images but the test cache {split.directory} holds "
            f"{split.image_size}px images; re-run training on the current cache (dvc repro)"
        )
    if len(split) == 0:
        raise DataError(f"{split.directory}: the test split is empty; nothing to evaluate")
    chunks, packed = [], []
    for start, probabilities in predictor.batches(split.images, config.batch_size):
        predicted = probabilities > config.threshold
        truth = torch.from_numpy(np.array(split.masks[start : start + len(predicted)], dtype=np.uint8))
        chunks.append(pixel_counts(predicted[:, 0], truth.to(predictor.device)).cpu())
        packed.append(np.packbits(predicted.flatten(1).cpu().numpy(), axis=1))
    counts_tensor = torch.cat(chunks)
    dice, iou = dice_from_counts(counts_tensor).numpy(), iou_from_counts(counts_tensor).numpy()
    counts = counts_tensor.numpy()
    summary = summarize(counts, dice, iou)
    summary.update({
        "threshold": float(config.threshold),
        "tta": bool(config.tta),
        "checkpoint_epoch": checkpoint.epoch,
        "checkpoint_val_dice": checkpoint.val_dice,
    })
    size = split.image_size
    return ModelEvaluation(name, list(split.names), counts, dice, iou, summary, np.concatenate(packed), (size, size))
