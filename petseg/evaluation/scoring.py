"""Scoring one checkpoint on the test cache: per-image scores, their summary, and per-breed figures.

Per image (the truth is trimap pet or boundary; the prediction is probability > threshold):

- Dice = 2|P∩G| / (|P| + |G|) and IoU = |P∩G| / |P∪G|, 1 when both are empty;
- Dice ignoring the border: the trimap's boundary pixels (value 3) removed from
  both prediction and truth first, the protocol some reports use;
- Boundary IoU (Cheng et al., CVPR 2021): the IoU of the two masks' inner bands
  of width d = max(1, round(0.02 x image diagonal)), 1 when both bands are empty.

Pooled Dice counts the pixels of all test images at once; pixel accuracy is the
share of all test pixels classified correctly. Species and breed come from the
split lists (kept in the cache by preprocess). Probabilities come from
petseg.predict, in exact float32. Pixel counts are taken on the device (int64);
the scores are float64 on the host (Apple's MPS has no float64).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petseg.checkpoint import Checkpoint, check_model_name, load_checkpoint
from petseg.data.cache import Split
from petseg.data.layout import BREEDS
from petseg.errors import CheckpointError, DataError
from petseg.evaluation.tables import PerImage
from petseg.memory import out_of_memory_explained
from petseg.metrics import TN, TP, boundary_iou, dice_from_counts, dice_ignoring, iou_from_counts, pixel_counts
from petseg.models import count_parameters
from petseg.params import EvaluateParams
from petseg.postprocess import postprocess_masks
from petseg.predict import Predictor

BOUNDARY = 3  # the trimap's "not classified" band


@dataclass
class ModelEvaluation:
    """One model's test results: per-image scores and labels, the summary for its metrics file, the masks."""

    model_name: str
    table: PerImage
    counts: np.ndarray  # N x 4 int64: tp, fp, fn, tn
    summary: dict[str, Any]
    packed_masks: np.ndarray  # N x ceil(H*W/8) uint8: the predicted masks, np.packbits per image
    mask_shape: tuple[int, int]

    @property
    def names(self) -> list[str]:
        return self.table.names

    @property
    def dice(self) -> np.ndarray:
        return self.table.scores["dice"]

    def predicted_masks(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The predicted masks (bool K x H x W) of the given images, exactly as they were scored."""
        height, width = self.mask_shape
        bits = np.unpackbits(self.packed_masks[np.asarray(indices, dtype=np.int64)], axis=1, count=height * width)
        return bits.reshape(-1, height, width).astype(bool)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarize(counts: np.ndarray, table: PerImage) -> dict[str, Any]:
    """The figures people compare, from per-image scores and pixel counts (``dice_std`` has ddof 0)."""
    dice = table.scores["dice"]
    if len(dice) == 0:
        raise DataError("no test images to evaluate")
    total = counts.sum(axis=0)
    species = np.array([s or "" for s in table.species])
    return {
        "dice_mean": float(np.mean(dice)),
        "dice_median": float(np.median(dice)),
        "dice_std": float(np.std(dice)),
        "dice_min": float(np.min(dice)),
        "dice_max": float(np.max(dice)),
        "iou_mean": float(np.mean(table.scores["iou"])),
        "dice_pooled": float(dice_from_counts(total)),
        "pixel_accuracy": float((total[TP] + total[TN]) / total.sum()),
        "n_images": int(len(dice)),
        "dice_mean_ignore_border": float(np.mean(table.scores["dice_ignore_border"])),
        "boundary_iou_mean": float(np.mean(table.scores["boundary_iou"])),
        "dice_mean_cat": _mean_or_none(dice[species == "cat"]),
        "dice_mean_dog": _mean_or_none(dice[species == "dog"]),
    }


def by_breed(table: PerImage) -> list[dict[str, Any]]:
    """One row per breed present (official class order): breed, species, n, Dice mean and median."""
    groups: dict[str, list[int]] = {}
    for index, breed in enumerate(table.breeds):
        if breed is not None:
            groups.setdefault(breed, []).append(index)
    order = {name: position for position, name in enumerate(BREEDS)}
    dice = table.scores["dice"]
    return [
        {
            "breed": breed,
            "species": table.species[indices[0]] or "",
            "n": len(indices),
            "dice_mean": float(np.mean(dice[indices])),
            "dice_median": float(np.median(dice[indices])),
        }
        for breed, indices in sorted(groups.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
    ]


def forward_gflops(model: torch.nn.Module, image_size: int) -> float:
    """GFLOPs of one forward pass of one image, as torch.utils.flop_counter counts them (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    return counter.get_total_flops() / 1e9


def training_seconds(best: Path, best_checkpoint: Checkpoint) -> list[float]:
    """Seconds per epoch of the run that made ``best`` (from its last.pt when that belongs to the same run)."""
    last = best.with_name("last.pt")
    if last != best and last.is_file():
        last_checkpoint = load_checkpoint(last)
        if last_checkpoint.signature == best_checkpoint.signature:
            return last_checkpoint.epoch_seconds
    return best_checkpoint.epoch_seconds


def evaluate_checkpoint(
    path: str | Path,
    split: Split,
    config: EvaluateParams,
    device: str | torch.device = "auto",
    *,
    expected_model: str | None = None,
    epoch_seconds: Sequence[float] | None = None,
) -> ModelEvaluation:
    """Score one checkpoint on a cache split.

    ``epoch_seconds`` is the training run's time per epoch; None reads it from the checkpoint
    (and from the last.pt beside it, when that belongs to the same run).
    """
    predictor = Predictor(path, device, tta=config.tta)
    checkpoint = predictor.checkpoint
    if epoch_seconds is None:
        epoch_seconds = training_seconds(Path(path), checkpoint)
    name = checkpoint.model_name
    if expected_model is not None:
        check_model_name(checkpoint, path, expected_model)
    if checkpoint.image_size != split.image_size:
        raise CheckpointError(
            f"{path}: trained on {checkpoint.image_size}px images but the test cache {split.directory} holds "
            f"{split.image_size}px images; re-run training on the current cache (dvc repro)"
        )
    if len(split) == 0:
        raise DataError(f"{split.directory}: the test split is empty; nothing to evaluate")
    counts, scores, packed = [], {"ignore_border": [], "boundary": []}, []
    with out_of_memory_explained(predictor.device, name, config.batch_size, split.image_size, "evaluate.batch_size"):
        for start, probabilities in predictor.batches(split.images, config.batch_size):
            predicted = postprocess_masks((probabilities > config.threshold)[:, 0], config.postprocess)
            rows = slice(start, start + len(predicted))
            truth = torch.from_numpy(np.array(split.masks[rows], dtype=np.uint8)).to(predictor.device).bool()
            border = torch.from_numpy(np.array(split.trimaps[rows]) == BOUNDARY).to(predictor.device)
            counts.append(pixel_counts(predicted, truth).cpu().numpy())
            scores["ignore_border"].append(dice_ignoring(predicted, truth, border))
            scores["boundary"].append(boundary_iou(predicted, truth))
            packed.append(np.packbits(predicted.flatten(1).cpu().numpy(), axis=1))
    all_counts = np.concatenate(counts)
    labels = split.labels or [None] * len(split)
    table = PerImage(
        list(split.names),
        {
            "dice": dice_from_counts(all_counts),
            "iou": iou_from_counts(all_counts),
            "dice_ignore_border": np.concatenate(scores["ignore_border"]),
            "boundary_iou": np.concatenate(scores["boundary"]),
        },
        [label.breed if label is not None else None for label in labels],
        [label.species_name if label is not None else None for label in labels],
    )
    summary = summarize(all_counts, table)
    summary.update(
        {
            "threshold": float(config.threshold),
            "tta": bool(config.tta),
            "postprocess": config.postprocess,
            "checkpoint_epoch": checkpoint.epoch,
            "checkpoint_val_dice": checkpoint.val_dice,
            "parameters": count_parameters(predictor.model),
            "gflops": float(f"{forward_gflops(predictor.model, split.image_size):.4g}"),
            "train_seconds_per_epoch": round(statistics.median(epoch_seconds), 2) if epoch_seconds else None,
        }
    )
    size = split.image_size
    return ModelEvaluation(name, table, all_counts, summary, np.concatenate(packed), (size, size))
