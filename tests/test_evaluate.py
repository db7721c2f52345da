"""The evaluate stage on a real (tiny) checkpoint and a real test cache, recomputed independently with NumPy."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from petseg.checkpoint import load_checkpoint, save_checkpoint
from petseg.data.layout import BREEDS
from petseg.errors import CheckpointError
from petseg.evaluation import evaluate_models
from petseg.evaluation.run import METRIC_KEYS
from petseg.evaluation.tables import read_worst_masks, worst_indices
from petseg.models import build_model
from petseg.predict import probabilities
from petseg.training import fit
from tests.cachemaker import labels, write_cache
from tests.paramsfile import default_params, evaluate_params, train_params, unet

REPO = Path(__file__).resolve().parents[1]
EMPTY_INDEX = 3  # this test image gets an empty truth mask


def write_params(path: Path, **evaluate: object) -> Path:
    """The repository's params.yaml with ``evaluate.*`` overridden."""
    params = default_params()
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
    fit(
        "unet",
        unet(base_channels=4, batch_size=8),
        train_params(epochs=2, lr=3e-3, device="cpu"),
        cache,
        root / "models" / "unet",
        live_dir=None,
        progress=False,
    )
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


def reference_boundary_iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Boundary IoU as Cheng et al.'s reference code computes it (cv2 there, scipy.ndimage here)."""
    scores = []
    for p, g in zip(predicted.astype(bool), truth.astype(bool)):
        height, width = p.shape
        d = max(1, int(round(0.02 * np.sqrt(height**2 + width**2))))
        bands = [
            m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3)), iterations=d, border_value=0) for m in (p, g)
        ]
        union = (bands[0] | bands[1]).sum()
        scores.append((bands[0] & bands[1]).sum() / union if union else 1.0)
    return np.array(scores)


def read_table(path: Path) -> dict[str, list]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["name", "breed", "species", "dice", "iou", "dice_ignore_border", "boundary_iou"]
    return {
        key: [row[key] if key in ("name", "breed", "species") else float(row[key]) for row in rows] for key in rows[0]
    }


def run_evaluate(root: Path, out: str, **config: object) -> dict:
    return evaluate_models(
        ["unet"], evaluate_params(**config), cache_dir=root / "cache", models_dir=root / "models",
        metrics_dir=root / out / "metrics", plots_dir=root / out / "plots", device="cpu",
    )  # fmt: skip


def test_per_image_table_and_metrics_match_numpy(workspace: Path) -> None:
    run_evaluate(workspace, "plain", threshold=0.5, tta=False, n_worst=3, batch_size=3)
    images = np.load(workspace / "cache" / "test" / "images.npy")
    truth = np.load(workspace / "cache" / "test" / "masks.npy")
    trimaps = np.load(workspace / "cache" / "test" / "trimaps.npy")
    test_names = (workspace / "cache" / "test" / "names.txt").read_text().split()

    predicted = sigmoid(independent_logits(workspace / "models" / "unet" / "best.pt", images)) > 0.5
    dice, iou, counts = numpy_scores(predicted, truth)
    border = trimaps == 3
    dice_ignoring, _, _ = numpy_scores(predicted & ~border, truth.astype(bool) & ~border)
    boundary = reference_boundary_iou(predicted, truth)
    table = read_table(workspace / "plain" / "plots" / "unet.csv")
    assert table["name"] == test_names
    np.testing.assert_array_equal(table["dice"], dice)  # repr floats: the exact values
    np.testing.assert_array_equal(table["iou"], iou)
    np.testing.assert_array_equal(table["dice_ignore_border"], dice_ignoring)
    np.testing.assert_array_equal(table["boundary_iou"], boundary)
    assert (dice_ignoring != dice).any() and (boundary != iou).any()  # the new scores measure something else
    species = [entry.species_name for entry in labels(test_names)]
    assert table["breed"] == [entry.breed for entry in labels(test_names)] and table["species"] == species

    assert sorted(p.name for p in (workspace / "plain" / "metrics").iterdir()) == ["unet.json"]
    unet = json.loads((workspace / "plain" / "metrics" / "unet.json").read_text())
    assert list(unet) == list(METRIC_KEYS)
    total = counts.sum(0)
    assert unet["n_images"] == 8
    assert unet["dice_mean"] == pytest.approx(dice.mean(), abs=1e-12)
    assert unet["dice_median"] == pytest.approx(np.median(dice), abs=1e-12)
    assert unet["dice_std"] == pytest.approx(dice.std(), abs=1e-12)
    assert unet["dice_min"] == dice.min() and unet["dice_max"] == dice.max()
    assert unet["iou_mean"] == pytest.approx(iou.mean(), abs=1e-12)
    assert unet["dice_pooled"] == pytest.approx(2 * total[0] / (2 * total[0] + total[1] + total[2]), abs=1e-12)
    assert unet["pixel_accuracy"] == pytest.approx((total[0] + total[3]) / total.sum(), abs=1e-12)
    assert unet["dice_mean_ignore_border"] == pytest.approx(dice_ignoring.mean(), abs=1e-12)
    assert unet["boundary_iou_mean"] == pytest.approx(boundary.mean(), abs=1e-12)
    cats = np.array(species) == "cat"
    assert unet["dice_mean_cat"] == pytest.approx(dice[cats].mean(), abs=1e-12)
    assert unet["dice_mean_dog"] == pytest.approx(dice[~cats].mean(), abs=1e-12)
    checkpoint = load_checkpoint(workspace / "models" / "unet" / "best.pt")
    assert unet["checkpoint_epoch"] == checkpoint.epoch
    assert unet["checkpoint_val_dice"] == checkpoint.val_dice
    assert unet["threshold"] == 0.5 and unet["tta"] is False
    model = build_model("unet", base_channels=4)
    assert unet["parameters"] == sum(p.numel() for p in model.parameters())
    last = load_checkpoint(workspace / "models" / "unet" / "last.pt")
    assert len(last.epoch_seconds) == 2 and unet["train_seconds_per_epoch"] == round(
        float(np.median(last.epoch_seconds)), 2
    )
    assert "eval_images_per_s" not in unet  # a run-to-run timing: benchmarks/speed.py measures it


def test_gflops_count_one_forward_pass(workspace: Path) -> None:
    """Hand count for a tiny UNet at 32 px: each conv 2*k*k*C_in*C_out per output pixel (as torch counts it)."""
    run_evaluate(workspace, "plain", n_worst=0)
    unet = json.loads((workspace / "plain" / "metrics" / "unet.json").read_text())
    c, size, flops = 4, 32, 0
    for level, (c_in, c_out) in enumerate([(3, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c), (8 * c, 16 * c)]):
        pixels = (size >> level) ** 2
        flops += 2 * 9 * (c_in * c_out + c_out * c_out) * pixels  # DoubleConv
    for level, (c_in, c_out) in enumerate([(16 * c, 8 * c), (8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c)]):
        pixels = (size >> (3 - level)) ** 2
        flops += 2 * 4 * c_in * c_out * (pixels // 4)  # ConvTranspose 2x2, stride 2: per input pixel
        flops += 2 * 9 * (2 * c_out * c_out + c_out * c_out) * pixels  # DoubleConv on [skip, up]
    flops += 2 * c * 1 * size * size  # 1x1 head
    assert unet["gflops"] == pytest.approx(flops / 1e9, rel=1e-3)


def test_per_breed_table_and_missing_labels(workspace: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_evaluate(workspace, "breeds", n_worst=0)
    table = read_table(workspace / "breeds" / "plots" / "unet.csv")
    with open(workspace / "breeds" / "plots" / "unet_by_breed.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["breed", "species", "n", "dice_mean", "dice_median"]
    expected = {}
    for breed, species, dice in zip(table["breed"], table["species"], table["dice"]):
        expected.setdefault((breed, species), []).append(dice)
    assert {
        (r["breed"], r["species"]): (int(r["n"]), float(r["dice_mean"]), float(r["dice_median"])) for r in rows
    } == {
        key: (len(v), pytest.approx(np.mean(v), abs=1e-12), pytest.approx(np.median(v), abs=1e-12))
        for key, v in expected.items()
    }
    order = [BREEDS.index(r["breed"]) for r in rows]
    assert order == sorted(order)  # the official class order

    bare = tmp_path / "bare"  # a cache whose lists had no label columns: those keys become null, one note
    shutil.copytree(workspace / "cache", bare / "cache")
    (bare / "cache" / "test" / "labels.csv").write_text(
        "name,class_id,species,breed_id\n" + "".join(f"{n},,,\n" for n in table["name"])
    )
    (bare / "models").symlink_to(workspace / "models")
    with caplog.at_level(logging.INFO, logger="petseg"):
        summary = run_evaluate(bare, "out", n_worst=0)["unet"]
    assert summary["dice_mean_cat"] is None and summary["dice_mean_dog"] is None
    assert caplog.text.count("have no species or breed") == 1
    assert (bare / "out" / "plots" / "unet_by_breed.csv").read_text() == "breed,species,n,dice_mean,dice_median\n"


def test_worst_masks_are_the_scored_predictions_of_the_worst_images(workspace: Path) -> None:
    run_evaluate(workspace, "gallery", n_worst=3, batch_size=8)
    path = workspace / "gallery" / "plots" / "unet_worst.npy"
    dice = np.array(read_table(workspace / "gallery" / "plots" / "unet.csv")["dice"])
    assert worst_indices(dice, 3).tolist() == np.argsort(dice, kind="stable")[:3].tolist()
    assert len(worst_indices(dice, 20)) == 8  # more than the test set: all of it
    images = np.load(workspace / "cache" / "test" / "images.npy")
    predicted = sigmoid(independent_logits(workspace / "models" / "unet" / "best.pt", images)) > 0.5
    np.testing.assert_array_equal(read_worst_masks(path, 32), predicted[worst_indices(dice, 3)])
    run_evaluate(workspace, "gallery", n_worst=0)  # no worst masks, and stale ones are removed
    assert not path.exists() and read_worst_masks(path, 32) is None
    assert (workspace / "gallery" / "plots" / "unet.csv").is_file()


def test_both_empty_scores_one(workspace: Path) -> None:
    """A model that predicts nothing scores 1 on the image with no pet and 0 on every other."""
    state = load_checkpoint(workspace / "models" / "unet" / "best.pt")
    state.model["head.bias"] = torch.full_like(state.model["head.bias"], -1000.0)
    blind = workspace / "blind"
    save_checkpoint(blind / "models" / "unet" / "best.pt", state)
    (blind / "cache").symlink_to(workspace / "cache")
    sections = run_evaluate(blind, "out", n_worst=2)
    table = read_table(blind / "out" / "plots" / "unet.csv")
    dice, iou = table["dice"], table["iou"]
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
    table_dice = read_table(workspace / "tta" / "plots" / "unet.csv")["dice"]
    np.testing.assert_array_equal(table_dice, dice)
    assert sections["unet"]["tta"] is True


def test_missing_checkpoint_names_the_stage(workspace: Path) -> None:
    with pytest.raises(CheckpointError, match=r"resnet34_unet/best.pt.*train_resnet"):
        evaluate_models(
            ["unet", "resnet34_unet"],
            evaluate_params(),
            cache_dir=workspace / "cache",
            models_dir=workspace / "models",
            metrics_dir=workspace / "never_metrics",
            plots_dir=workspace / "never",
            device="cpu",
        )
    assert not (workspace / "never_metrics").exists() and not (workspace / "never").exists()


def test_checkpoint_of_another_model_is_refused(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "resnet34_unet").mkdir()
    (tmp_path / "resnet34_unet" / "best.pt").symlink_to(workspace / "models" / "unet" / "best.pt")
    with pytest.raises(CheckpointError, match="holds a unet model, expected resnet34_unet"):
        evaluate_models(
            ["resnet34_unet"],
            evaluate_params(),
            cache_dir=workspace / "cache",
            models_dir=tmp_path,
            metrics_dir=tmp_path / "m",
            plots_dir=tmp_path / "p",
            device="cpu",
        )


def test_corrupt_checkpoint_stops_before_any_output(workspace: Path, tmp_path: Path) -> None:
    shutil.copytree(workspace / "models" / "unet", tmp_path / "unet")
    (tmp_path / "resnet34_unet").mkdir()
    whole = (tmp_path / "unet" / "best.pt").read_bytes()
    (tmp_path / "resnet34_unet" / "best.pt").write_bytes(whole[: len(whole) // 3])  # truncated
    with pytest.raises(CheckpointError, match=r"resnet34_unet/best.pt: not a readable checkpoint"):
        evaluate_models(
            ["unet", "resnet34_unet"],
            evaluate_params(),
            cache_dir=workspace / "cache",
            models_dir=tmp_path,
            metrics_dir=tmp_path / "m",
            plots_dir=tmp_path / "p",
            device="cpu",
        )
    assert not (tmp_path / "m").exists() and not (tmp_path / "p").exists()


def test_stage_script_runs_and_fails_cleanly(workspace: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", threshold=0.4, n_worst=2)
    command = [sys.executable, str(REPO / "stages" / "evaluate.py"), "--params", str(params),
               "--cache", str(workspace / "cache"), "--models-dir", str(workspace / "models"),
               "--metrics", str(tmp_path / "metrics"), "--plots", str(tmp_path / "plots"),
               "--device", "cpu"]  # fmt: skip
    done = subprocess.run([*command, "--models", "unet"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    report = {"unet": json.loads((tmp_path / "metrics" / "unet.json").read_text())}
    assert report["unet"]["threshold"] == 0.4 and report["unet"]["n_images"] == 8
    assert (tmp_path / "plots" / "unet.csv").is_file() and (tmp_path / "plots" / "unet_worst.npy").is_file()

    # a bad param: exit 2 before any work
    bad = write_params(tmp_path / "bad.yaml", threshold=1.5)
    refused = subprocess.run(
        [*command[:2], "--params", str(bad)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    # (a missing checkpoint as a one-line error: test_missing_checkpoint_names_the_stage and the infer stage test)
    assert refused.returncode == 2 and "evaluate.threshold" in refused.stderr and "Traceback" not in refused.stderr


def test_largest_region_postprocessing_is_scored(workspace: Path) -> None:
    """evaluate.postprocess: largest scores the reference's largest filled region of each thresholded mask."""
    from tests.test_postprocess import reference_largest_filled

    run_evaluate(workspace, "largest", threshold=0.5, tta=False, n_worst=3, batch_size=3, postprocess="largest")
    images = np.load(workspace / "cache" / "test" / "images.npy")
    truth = np.load(workspace / "cache" / "test" / "masks.npy")
    predicted = sigmoid(independent_logits(workspace / "models" / "unet" / "best.pt", images)) > 0.5
    kept = np.stack([reference_largest_filled(mask) for mask in predicted])
    assert (kept != predicted).any()  # the tiny model's masks have strays or holes to remove
    dice, _, _ = numpy_scores(kept, truth)
    np.testing.assert_array_equal(read_table(workspace / "largest" / "plots" / "unet.csv")["dice"], dice)
    record = json.loads((workspace / "largest" / "metrics" / "unet.json").read_text())
    assert record["postprocess"] == "largest" and record["dice_mean"] == pytest.approx(dice.mean(), abs=1e-12)
