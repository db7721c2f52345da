"""The evaluate stage on a real (tiny) checkpoint and a real test cache, recomputed independently with NumPy."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from petseg.checkpoint import load_checkpoint, save_checkpoint
from petseg.errors import CheckpointError
from petseg.evaluation import evaluate_models
from petseg.evaluation.run import merge_report
from petseg.models import build_model
from petseg.plotting.gallery import gallery_pixel_size, worst_indices
from petseg.predict import probabilities
from petseg.training import fit
from tests.cachemaker import write_cache
from tests.paramsfile import evaluate_params, train_params, unet

REPO = Path(__file__).resolve().parents[1]
EMPTY_INDEX = 3  # this test image gets an empty truth mask


def write_params(path: Path, **evaluate: object) -> Path:
    """The repository's params.yaml with ``evaluate.*`` overridden."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate"].update(evaluate)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32x32 cache (one test image with an empty mask) and a UNet trained on it for two epochs."""
    root = tmp_path_factory.mktemp("evaluate")
    cache = write_cache(root / "cache", {"train": 32, "val": 8, "test": 8}, image_size=32)
    masks = np.load(cache / "test" / "masks.npy")
    trimaps = np.load(cache / "test" / "trimaps.npy")
    masks[EMPTY_INDEX] = 0
    trimaps[EMPTY_INDEX] = 2
    np.save(cache / "test" / "masks.npy", masks)
    np.save(cache / "test" / "trimaps.npy", trimaps)
    fit("unet", unet(base_channels=4, batch_size=8), train_params(epochs=2, lr=3e-3, device="cpu"), cache, root / "models" / "unet",
        live_dir=None, progress=False)
    return root


def independent_logits(checkpoint_path: Path, images: np.ndarray, flip: bool = False) -> np.ndarray:
    """float32 logits N x H x W straight from the checkpoint file (one contiguous batch)."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)  # the file itself, not petseg's reader
    model = build_model(state["model_name"], **state["model_params"])
    model.load_state_dict(state["model"])
    model.eval()
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    if flip:
        x = x.flip(-1)
    with torch.no_grad():
        logits = model(x)[:, 0].numpy()
    return logits[..., ::-1] if flip else logits


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def numpy_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image Dice and IoU (both empty = 1) and the N x 4 counts [tp, fp, fn, tn], in NumPy."""
    p = predicted.reshape(len(predicted), -1).astype(bool)
    g = truth.reshape(len(truth), -1).astype(bool)
    tp = (p & g).sum(1)
    fp = (p & ~g).sum(1)
    fn = (~p & g).sum(1)
    tn = (~p & ~g).sum(1)
    dice = np.array([2 * a / (2 * a + b + c) if 2 * a + b + c else 1.0 for a, b, c in zip(tp, fp, fn)])
    iou = np.array([a / (a + b + c) if a + b + c else 1.0 for a, b, c in zip(tp, fp, fn)])
    return dice, iou, np.stack([tp, fp, fn, tn], axis=1)


def read_table(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["name", "dice", "iou"]
    body = rows[1:]
    return [r[0] for r in body], np.array([float(r[1]) for r in body]), np.array([float(r[2]) for r in body])


def run_evaluate(root: Path, out: str, **config: object) -> dict:
    return evaluate_models(
        ["unet"], evaluate_params(**config), cache_dir=root / "cache", models_dir=root / "models",
        metrics_path=root / out / "evaluate.json", plots_dir=root / out / "plots", device="cpu",
    )  # fmt: skip


def test_per_image_table_and_metrics_match_numpy(workspace: Path) -> None:
    run_evaluate(workspace, "plain", threshold=0.5, tta=False, n_worst=3, batch_size=3)
    images = np.load(workspace / "cache" / "test" / "images.npy")
    truth = np.load(workspace / "cache" / "test" / "masks.npy")
    test_names = (workspace / "cache" / "test" / "names.txt").read_text().split()

    logits = independent_logits(workspace / "models" / "unet" / "best.pt", images)
    dice, iou, counts = numpy_scores(sigmoid(logits) > 0.5, truth)
    names, table_dice, table_iou = read_table(workspace / "plain" / "plots" / "unet.csv")
    assert names == test_names
    np.testing.assert_array_equal(table_dice, dice)  # repr floats: the exact values
    np.testing.assert_array_equal(table_iou, iou)

    report = json.loads((workspace / "plain" / "evaluate.json").read_text())
    assert list(report) == ["unet"]
    unet = report["unet"]
    total = counts.sum(0)
    assert unet["n_images"] == 8
    assert unet["dice_mean"] == pytest.approx(dice.mean(), abs=1e-12)
    assert unet["dice_median"] == pytest.approx(np.median(dice), abs=1e-12)
    assert unet["dice_std"] == pytest.approx(dice.std(), abs=1e-12)
    assert unet["dice_min"] == dice.min() and unet["dice_max"] == dice.max()
    assert unet["iou_mean"] == pytest.approx(iou.mean(), abs=1e-12)
    assert unet["dice_pooled"] == pytest.approx(2 * total[0] / (2 * total[0] + total[1] + total[2]), abs=1e-12)
    assert unet["pixel_accuracy"] == pytest.approx((total[0] + total[3]) / total.sum(), abs=1e-12)
    checkpoint = load_checkpoint(workspace / "models" / "unet" / "best.pt")
    assert unet["checkpoint_epoch"] == checkpoint.epoch
    assert unet["checkpoint_val_dice"] == checkpoint.val_dice
    assert unet["threshold"] == 0.5 and unet["tta"] is False


def test_gallery_shows_the_worst_images(workspace: Path) -> None:
    run_evaluate(workspace, "gallery", n_worst=3, batch_size=8)
    gallery = workspace / "gallery" / "plots" / "unet_worst.png"
    with Image.open(gallery) as image:
        image.load()
        assert image.size == gallery_pixel_size(3) == (600, 750)
    _, dice, _ = read_table(workspace / "gallery" / "plots" / "unet.csv")
    assert worst_indices(dice, 3).tolist() == np.argsort(dice, kind="stable")[:3].tolist()
    assert len(worst_indices(dice, 20)) == 8  # more than the test set: all of it
    run_evaluate(workspace, "gallery", n_worst=0)  # no gallery, and a stale one is removed
    assert not gallery.exists()
    assert (workspace / "gallery" / "plots" / "unet.csv").is_file()


def test_both_empty_scores_one(workspace: Path) -> None:
    """A model that predicts nothing scores 1 on the image with no pet and 0 on every other."""
    state = load_checkpoint(workspace / "models" / "unet" / "best.pt")
    state.model["head.bias"] = torch.full_like(state.model["head.bias"], -1000.0)
    blind = workspace / "blind"
    save_checkpoint(blind / "models" / "unet" / "best.pt", state)
    (blind / "cache").symlink_to(workspace / "cache")
    sections = run_evaluate(blind, "out", n_worst=2)
    _, dice, iou = read_table(blind / "out" / "plots" / "unet.csv")
    expected = np.zeros(8)
    expected[EMPTY_INDEX] = 1.0
    np.testing.assert_array_equal(dice, expected)
    np.testing.assert_array_equal(iou, expected)
    assert sections["unet"]["dice_pooled"] == 0.0
    assert sections["unet"]["dice_max"] == 1.0


def test_tta_averages_the_flipped_probabilities(workspace: Path) -> None:
    path = workspace / "models" / "unet" / "best.pt"
    images = np.load(workspace / "cache" / "test" / "images.npy")
    truth = np.load(workspace / "cache" / "test" / "masks.npy")
    plain = sigmoid(independent_logits(path, images))
    averaged = (plain + sigmoid(independent_logits(path, images, flip=True))) / 2

    from petseg.checkpoint import load_model

    model, _ = load_model(path)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    with_tta = probabilities(model, x, tta=True)[:, 0].numpy()
    np.testing.assert_allclose(with_tta, averaged, atol=1e-6)
    assert np.abs(with_tta - plain).max() > 1e-3  # the flip really changes the map

    sections = run_evaluate(workspace, "tta", tta=True, batch_size=4, n_worst=1)
    dice, _, _ = numpy_scores(averaged > 0.5, truth)
    _, table_dice, _ = read_table(workspace / "tta" / "plots" / "unet.csv")
    np.testing.assert_array_equal(table_dice, dice)
    assert sections["unet"]["tta"] is True


def test_missing_checkpoint_names_the_stage(workspace: Path) -> None:
    with pytest.raises(CheckpointError, match=r"resnet34_unet/best.pt.*train_resnet"):
        evaluate_models(["unet", "resnet34_unet"], evaluate_params(), cache_dir=workspace / "cache",
                        models_dir=workspace / "models", metrics_path=workspace / "never.json",
                        plots_dir=workspace / "never", device="cpu")
    assert not (workspace / "never.json").exists() and not (workspace / "never").exists()


def test_checkpoint_of_another_model_is_refused(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "resnet34_unet").mkdir()
    (tmp_path / "resnet34_unet" / "best.pt").symlink_to(workspace / "models" / "unet" / "best.pt")
    with pytest.raises(CheckpointError, match="holds a unet model, expected resnet34_unet"):
        evaluate_models(["resnet34_unet"], evaluate_params(), cache_dir=workspace / "cache", models_dir=tmp_path,
                        metrics_path=tmp_path / "m.json", plots_dir=tmp_path / "p", device="cpu")


def test_corrupt_checkpoint_stops_before_any_output(workspace: Path, tmp_path: Path) -> None:
    shutil.copytree(workspace / "models" / "unet", tmp_path / "unet")
    (tmp_path / "resnet34_unet").mkdir()
    whole = (tmp_path / "unet" / "best.pt").read_bytes()
    (tmp_path / "resnet34_unet" / "best.pt").write_bytes(whole[: len(whole) // 3])  # truncated
    with pytest.raises(CheckpointError, match=r"resnet34_unet/best.pt: not a readable checkpoint"):
        evaluate_models(["unet", "resnet34_unet"], evaluate_params(), cache_dir=workspace / "cache",
                        models_dir=tmp_path, metrics_path=tmp_path / "m.json", plots_dir=tmp_path / "p", device="cpu")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "p").exists()


def test_partial_run_keeps_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "evaluate.json"
    path.write_text(json.dumps({"resnet34_unet": {"dice_mean": 0.5}, "unet": {"dice_mean": 0.1}}))
    merged = merge_report(path, {"unet": {"dice_mean": 0.9}})
    assert merged == {"unet": {"dice_mean": 0.9}, "resnet34_unet": {"dice_mean": 0.5}}
    assert list(merged) == ["unet", "resnet34_unet"]


def test_stage_script_runs_and_fails_cleanly(workspace: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", threshold=0.4, n_worst=2)
    command = [sys.executable, str(REPO / "stages" / "evaluate.py"), "--params", str(params),
               "--cache", str(workspace / "cache"), "--models-dir", str(workspace / "models"),
               "--metrics", str(tmp_path / "metrics" / "evaluate.json"), "--plots", str(tmp_path / "plots"),
               "--device", "cpu"]  # fmt: skip
    done = subprocess.run([*command, "--models", "unet"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert report["unet"]["threshold"] == 0.4 and report["unet"]["n_images"] == 8
    assert (tmp_path / "plots" / "unet.csv").is_file() and (tmp_path / "plots" / "unet_worst.png").is_file()

    # a bad param: exit 2 before any work
    bad = write_params(tmp_path / "bad.yaml", threshold=1.5)
    refused = subprocess.run([*command[:2], "--params", str(bad)], capture_output=True, text=True, cwd=tmp_path,
                             timeout=120)
    # (a missing checkpoint as a one-line error: test_missing_checkpoint_names_the_stage and the infer stage test)
    assert refused.returncode == 2 and "evaluate.threshold" in refused.stderr and "Traceback" not in refused.stderr
