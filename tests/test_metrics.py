"""Dice and IoU as the README defines them, against an independent NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petseg.losses import get_loss, soft_dice_loss
from petseg.metrics import dice_from_counts, dice_per_image, iou_from_counts, pixel_counts, probability_mask


def numpy_dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    pred, truth = pred.astype(bool), truth.astype(bool)
    inter = np.logical_and(pred, truth).sum()
    total = pred.sum() + truth.sum()
    union = np.logical_or(pred, truth).sum()
    dice = 1.0 if total == 0 else 2 * inter / total
    iou = 1.0 if union == 0 else inter / union
    return dice, iou


def test_per_image_dice_and_iou_match_numpy():
    rng = np.random.default_rng(0)
    pred = rng.random((20, 16, 16)) > rng.random((20, 1, 1))
    truth = rng.random((20, 16, 16)) > rng.random((20, 1, 1))
    pred[3] = False
    truth[3] = False  # both empty -> 1
    pred[4] = False  # prediction empty, truth not -> 0
    counts = pixel_counts(torch.from_numpy(pred), torch.from_numpy(truth))
    dice, iou = dice_from_counts(counts), iou_from_counts(counts)
    for i in range(20):
        expected_dice, expected_iou = numpy_dice_iou(pred[i], truth[i])
        assert dice[i] == pytest.approx(expected_dice, abs=1e-12)
        assert iou[i] == pytest.approx(expected_iou, abs=1e-12)
    assert dice[3] == 1.0 and iou[3] == 1.0 and dice[4] == 0.0
    assert counts.sum(1).tolist() == [256] * 20


def test_threshold_is_applied_to_the_sigmoid():
    logits = torch.tensor([[-2.0, -0.1, 0.1, 0.5, 2.0]])
    assert probability_mask(logits, 0.5).tolist() == [[False, False, True, True, True]]
    assert probability_mask(logits, 0.6).tolist() == [[False, False, False, True, True]]  # sigmoid(0.5) = 0.62
    truth = torch.tensor([[0, 0, 1, 1, 1]])
    assert dice_per_image(logits, truth, 0.5).item() == 1.0
    assert dice_per_image(logits, truth, 0.6).item() == pytest.approx(0.8)


def test_losses_are_low_for_a_confident_right_answer_and_high_for_a_wrong_one():
    truth = (torch.rand(4, 1, 8, 8) > 0.5).float()
    right, wrong = (truth * 2 - 1) * 10, (1 - truth * 2) * 10
    for name in ("bce", "dice", "bce+dice"):
        loss = get_loss(name)
        assert loss(right, truth) < 0.01 and loss(wrong, truth) > 0.9, name
    assert soft_dice_loss(torch.full((1, 1, 4, 4), -20.0), torch.zeros(1, 1, 4, 4)) < 1e-3  # empty-empty
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("focal")
