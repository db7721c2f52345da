"""The training loop: it learns, it logs, and it never loses or silently mixes work."""

from __future__ import annotations

import csv
import dataclasses
import logging
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from petseg.checkpoint import load_checkpoint
from petseg.data.cache import load_split
from petseg.distributed import DistContext
from petseg.errors import CheckpointError
from petseg.params import TrainParams
from petseg.training import fit
from petseg.training.batches import epoch_batches
from tests.cachemaker import write_cache
from tests.paramsfile import REPO, augmentation, resnet, train_params, unet, write_params

UNET = unet(base_channels=4, batch_size=8)
AUGMENT = augmentation(hflip=0.5, vflip=0.2, brightness=0.2, contrast=0.2, saturation=0.2)


def config(**overrides) -> TrainParams:
    values = dict(
        epochs=3,
        lr=3e-3,
        weight_decay=1e-4,
        seed=7,
        loss="bce+dice",
        optimizer="adamw",
        scheduler="onecycle",
        augment=AUGMENT,
        device="cpu",
    )
    values.update(overrides)
    return train_params(**values)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("cache"), {"train": 48, "val": 16}, image_size=32)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_learns_well_beyond_predicting_all_pet(tmp_path: Path):
    cache = write_cache(tmp_path / "cache", {"train": 96, "val": 24}, image_size=32, seed=3)
    result = fit("unet", unet(base_channels=8, batch_size=8), config(epochs=8), cache, tmp_path / "m", progress=False)
    masks = load_split(cache, "val").masks.reshape(24, -1).astype(np.float64)
    all_pet_dice = (2 * masks.sum(1) / (masks.shape[1] + masks.sum(1))).mean()
    assert result.best_dice > all_pet_dice + 0.25, (result.best_dice, all_pet_dice)


def test_checkpoints_hold_the_whole_training_state(cache: Path, tmp_path: Path):
    result = fit("unet", UNET, config(), cache, tmp_path / "m", tmp_path / "live", progress=False)
    last = load_checkpoint(tmp_path / "m" / "last.pt")
    best = load_checkpoint(tmp_path / "m" / "best.pt")
    for key in ("model", "optimizer", "scheduler", "epoch", "best_dice", "best_epoch", "rng", "params", "history"):
        assert getattr(last, key) is not None, key
    assert last.epoch == 3 and len(last.history) == 3
    assert last.params["train"]["lr"] == 3e-3 and last.params["model"] == {"base_channels": 4, "batch_size": 8}
    assert best.epoch == result.best_epoch == last.best_epoch
    assert best.val_dice == pytest.approx(max(r["val/dice"] for r in last.history))
    assert last.image_size == 32 and last.model_name == "unet"


def test_dvclive_logs_one_row_per_epoch(cache: Path, tmp_path: Path):
    fit("unet", UNET, config(), cache, tmp_path / "m", tmp_path / "live", progress=False)
    for metric in ("train/loss", "train/dice", "val/loss", "val/dice", "lr"):
        path = tmp_path / "live" / "plots" / "metrics" / f"{metric}.tsv"
        rows = list(csv.DictReader(path.open(), delimiter="\t"))
        assert [int(r["step"]) for r in rows] == [1, 2, 3], metric  # step = epoch number
    summary = __import__("json").loads((tmp_path / "live" / "metrics.json").read_text())
    assert set(summary) >= {"train", "val", "lr", "best"}


def test_a_finished_run_is_not_repeated(cache: Path, tmp_path: Path):
    fit("unet", UNET, config(), cache, tmp_path / "m", progress=False)
    again = fit("unet", UNET, config(), cache, tmp_path / "m", progress=False)
    assert again.epochs_run == 0 and len(again.history) == 3


def test_raising_epochs_continues_a_schedule_free_run_exactly(cache: Path, tmp_path: Path):
    fit("unet", UNET, config(epochs=2, scheduler="plateau"), cache, tmp_path / "a", tmp_path / "live", progress=False)
    extended = fit(
        "unet", UNET, config(epochs=4, scheduler="plateau"), cache, tmp_path / "a", tmp_path / "live", progress=False
    )
    straight = fit("unet", UNET, config(epochs=4, scheduler="plateau"), cache, tmp_path / "b", progress=False)
    assert extended.epochs_run == 2
    assert extended.history == straight.history
    assert_same_weights(
        load_checkpoint(tmp_path / "a" / "last.pt").model, load_checkpoint(tmp_path / "b" / "last.pt").model
    )
    rows = list(csv.DictReader((tmp_path / "live" / "plots" / "metrics" / "val" / "dice.tsv").open(), delimiter="\t"))
    assert len(rows) == 4  # logs appended, not restarted


def test_raising_epochs_under_onecycle_starts_over_and_says_why(cache: Path, tmp_path: Path, caplog):
    fit("unet", UNET, config(epochs=2), cache, tmp_path / "a", progress=False)
    with caplog.at_level(logging.INFO, logger="petseg"):
        result = fit("unet", UNET, config(epochs=3), cache, tmp_path / "a", progress=False)
    assert result.epochs_run == 3
    assert "starting over" in caplog.text and "onecycle" in caplog.text


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"lr": 1e-3}, "train.lr: 0.003 -> 0.001"),
        ({"augment": {"hflip": 0.0}}, "train.augment.hflip"),
        ({"loss": "dice"}, "train.loss"),
    ],
)
def test_any_other_param_change_starts_over(cache: Path, tmp_path: Path, caplog, change, expected):
    fit("unet", UNET, config(epochs=2), cache, tmp_path / "m", progress=False)
    with caplog.at_level(logging.INFO, logger="petseg"):
        change = {
            key: dataclasses.replace(AUGMENT, **value) if key == "augment" else value for key, value in change.items()
        }
        result = fit("unet", UNET, config(epochs=2, **change), cache, tmp_path / "m", progress=False)
    assert result.epochs_run == 2
    assert "starting over" in caplog.text and expected in caplog.text


def test_changed_model_width_or_data_starts_over(tmp_path: Path, caplog):
    cache = write_cache(tmp_path / "cache", {"train": 24, "val": 8}, image_size=32, seed=1)
    fit("unet", UNET, config(epochs=1), cache, tmp_path / "m", progress=False)
    with caplog.at_level(logging.INFO, logger="petseg"):
        fit("unet", dataclasses.replace(UNET, base_channels=6), config(epochs=1), cache, tmp_path / "m", progress=False)
    assert "model.base_channels: 4 -> 6" in caplog.text
    write_cache(tmp_path / "cache", {"train": 24, "val": 8}, image_size=32, seed=2)  # same shapes, other pixels
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="petseg"):
        result = fit(
            "unet", dataclasses.replace(UNET, base_channels=6), config(epochs=1), cache, tmp_path / "m", progress=False
        )
    assert result.epochs_run == 1 and "data_fingerprint" in caplog.text


def test_corrupt_last_checkpoint_is_a_clear_error(cache: Path, tmp_path: Path):
    fit("unet", UNET, config(epochs=1), cache, tmp_path / "m", progress=False)
    last = tmp_path / "m" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(last)):
        fit("unet", UNET, config(epochs=2), cache, tmp_path / "m", progress=False)


@pytest.mark.parametrize(
    "optimizer,scheduler,loss",
    [
        ("adam", "none", "bce"),
        ("adamw", "cosine", "dice"),
        ("adam", "plateau", "bce+dice"),
    ],
)
def test_every_optimizer_scheduler_and_loss_trains(cache: Path, tmp_path: Path, optimizer, scheduler, loss):
    result = fit(
        "unet",
        UNET,
        config(epochs=2, optimizer=optimizer, scheduler=scheduler, loss=loss),
        cache,
        tmp_path,
        progress=False,
    )
    assert len(result.history) == 2 and all(np.isfinite(r["train/loss"]) for r in result.history)


def test_resnet34_unet_trains(tmp_path: Path):
    cache = write_cache(tmp_path / "cache", {"train": 8, "val": 4}, image_size=32)
    result = fit(
        "resnet34_unet",
        resnet(encoder_weights=None, batch_size=4),
        config(epochs=1),
        cache,
        tmp_path / "m",
        progress=False,
    )
    assert load_checkpoint(tmp_path / "m" / "best.pt").model_name == "resnet34_unet"
    assert 0.0 <= result.best_dice <= 1.0


def test_epoch_batches_cover_the_shuffle_and_split_it_across_ranks():
    single = epoch_batches(50, 8, seed=1, epoch=3)
    assert len(single) == 6 and all(len(b) == 8 for b in single)
    assert len(set(np.concatenate(single))) == 48
    assert not np.array_equal(np.concatenate(single), np.concatenate(epoch_batches(50, 8, seed=1, epoch=4)))
    ranks = [epoch_batches(50, 8, seed=1, epoch=3, context=DistContext(rank=r, world_size=2)) for r in range(2)]
    for b, (r0, r1) in enumerate(zip(*ranks)):
        assert sorted(np.concatenate([r0, r1])) == sorted(single[b])
    assert len(epoch_batches(5, 8, seed=0, epoch=0)[0]) == 5  # fewer images than a batch: one batch of all


def _train_command(params: Path, cache: Path, out: Path, live: Path) -> list[str]:
    return [
        sys.executable,
        "stages/train.py",
        "unet",
        "--params",
        str(params),
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--live",
        str(live),
        "--no-progress",
    ]


@pytest.mark.slow
def test_training_killed_mid_run_resumes_to_exactly_the_uninterrupted_result(tmp_path: Path):
    cache = write_cache(tmp_path / "cache", {"train": 96, "val": 16}, image_size=32)
    params = write_params(
        tmp_path / "params.yaml",
        {
            "train.epochs": 5,
            "train.device": "cpu",
            "models.unet.base_channels": 8,
            "models.unet.batch_size": 8,
        },
    )
    subprocess.run(
        _train_command(params, cache, tmp_path / "a", tmp_path / "live_a"), cwd=REPO, check=True, capture_output=True
    )

    killed = subprocess.Popen(
        _train_command(params, cache, tmp_path / "b", tmp_path / "live_b"),
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for line in killed.stderr:
        if "epoch 2/5" in line:
            killed.send_signal(signal.SIGKILL)  # during epoch 3, or while writing its checkpoint
            break
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "b" / "last.pt").epoch in (2, 3)

    resumed = subprocess.run(
        _train_command(params, cache, tmp_path / "b", tmp_path / "live_b"),
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "resuming from" in resumed.stderr
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert_same_weights(a.model, b.model)
    assert a.history == b.history and a.best_epoch == b.best_epoch
    assert_same_weights(
        load_checkpoint(tmp_path / "a" / "best.pt").model, load_checkpoint(tmp_path / "b" / "best.pt").model
    )
    for metric in ("train/dice.tsv", "val/loss.tsv"):
        log_a = (tmp_path / "live_a" / "plots" / "metrics" / metric).read_text()
        assert log_a == (tmp_path / "live_b" / "plots" / "metrics" / metric).read_text()
    assert not list((tmp_path / "b").glob(".*tmp*"))  # no temp files left behind


def test_logs_are_written_in_a_git_repository_without_commits(cache: Path, tmp_path: Path, monkeypatch):
    # a fresh `git init` + `dvc repro` before the first commit: DVCLive alone would fail on HEAD
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    monkeypatch.chdir(tmp_path / "repo")
    fit("unet", UNET, config(epochs=1), cache, "models/unet", "dvclive/unet", progress=False)
    assert (tmp_path / "repo" / "dvclive/unet/plots/metrics/val/dice.tsv").read_text().startswith("step\tdice\n1\t")


def test_a_second_trainer_on_the_same_checkpoints_is_refused(cache: Path, tmp_path: Path):
    import fcntl
    import os

    from petseg.errors import PetsegError

    (tmp_path / "m").mkdir()
    held = os.open(tmp_path / "m", os.O_RDONLY)  # as a still-running first trainer holds it
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(PetsegError, match="another training process is writing these checkpoints"):
            fit("unet", UNET, config(epochs=1), cache, tmp_path / "m", progress=False)
        assert not (tmp_path / "m" / "last.pt").exists()
    finally:
        os.close(held)
    fit("unet", UNET, config(epochs=1), cache, tmp_path / "m", progress=False)  # free again
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["best.pt", "last.pt"]


def test_precision_is_logged_and_part_of_the_run(cache: Path, tmp_path: Path, caplog):
    with caplog.at_level(logging.INFO, logger="petseg"):
        fit("unet", UNET, config(epochs=1, precision="bf16"), cache, tmp_path / "m", progress=False)
    assert "training in bf16 (train.precision: bf16)" in caplog.text
    assert load_checkpoint(tmp_path / "m" / "last.pt").signature["precision"] == "bf16"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="petseg"):
        result = fit("unet", UNET, config(epochs=1, precision="fp32"), cache, tmp_path / "m", progress=False)
    assert result.epochs_run == 1 and "starting over" in caplog.text and "precision: 'bf16' -> 'fp32'" in caplog.text


def test_fp16_trains_with_a_gradient_scaler_and_resumes_exactly(cache: Path, tmp_path: Path):
    fp16 = dict(precision="fp16", scheduler="plateau")
    fit("unet", UNET, config(epochs=1, **fp16), cache, tmp_path / "a", progress=False)
    extended = fit("unet", UNET, config(epochs=2, **fp16), cache, tmp_path / "a", progress=False)
    fit("unet", UNET, config(epochs=2, **fp16), cache, tmp_path / "b", progress=False)  # uninterrupted
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert extended.epochs_run == 1 and a.scaler is not None and a.scaler["scale"] > 0
    assert a.history == b.history and a.scaler == b.scaler
    assert_same_weights(a.model, b.model)


def test_auto_precision_on_the_cpu_is_bf16_exactly_where_the_cpu_has_it_natively():
    from petseg.precision import resolve_precision

    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):  # x86, Arm
            flags = set(line.split(":", 1)[1].split())
            break
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    chosen = resolve_precision("auto", torch.device("cpu"))
    assert chosen.name == ("bf16" if native else "fp32") and chosen.reason.startswith("auto: ")
    assert resolve_precision("fp32", torch.device("cpu")).grad_scaler() is None
    assert resolve_precision("fp16", torch.device("cpu")).grad_scaler() is not None


def test_weight_average_follows_its_warmed_up_recurrence():
    from petseg.training.ema import WeightAverage

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 4, 3))
    average = WeightAverage(model, decay=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = None
    for step in range(30):
        (model(torch.randn(2, 3, 8, 8)) - 1).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        average.update()
        current = {k: v.double().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        if expected is None:  # the first update copies the weights
            expected = current
        else:  # then moves towards them by 1 - min(0.9, (1 + t) / (10 + t)), t = updates so far
            decay = min(0.9, (1 + step) / (10 + step))
            expected = {k: decay * expected[k] + (1 - decay) * current[k] for k in expected}
    averaged = average.module.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key].double(), value, rtol=1e-5, atol=1e-6)
    assert averaged["0.num_batches_tracked"] == model.state_dict()["0.num_batches_tracked"] == 30
    assert average.steps == 30
    assert not torch.allclose(averaged["1.weight"], model.state_dict()["1.weight"])


def test_ema_validates_and_saves_the_average_leaves_the_training_alone_and_resumes_exactly(cache: Path, tmp_path: Path):
    ema = dict(ema=0.9, scheduler="plateau")
    plain = fit("unet", UNET, config(epochs=2, scheduler="plateau"), cache, tmp_path / "plain", progress=False)
    fit("unet", UNET, config(epochs=1, **ema), cache, tmp_path / "a", progress=False)
    extended = fit("unet", UNET, config(epochs=2, **ema), cache, tmp_path / "a", progress=False)
    straight = fit("unet", UNET, config(epochs=2, **ema), cache, tmp_path / "b", progress=False)
    trained = load_checkpoint(tmp_path / "plain" / "last.pt")
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert trained.ema is None and b.ema is not None and b.ema["steps"] == 2 * 48 // 8
    assert_same_weights(b.ema["trained"], trained.model)  # the average does not touch the trained weights
    assert not torch.equal(b.model["head.weight"], trained.model["head.weight"])
    assert [r["train/loss"] for r in straight.history] == [r["train/loss"] for r in plain.history]
    assert straight.history[-1]["val/loss"] != plain.history[-1]["val/loss"]  # validated: the average
    assert b.signature["train"]["ema"] == 0.9
    # interrupted after epoch 1 and continued: the same average, trained weights and history
    assert extended.epochs_run == 1 and a.history == b.history and a.ema["steps"] == b.ema["steps"]
    assert_same_weights(a.model, b.model)
    assert_same_weights(a.ema["trained"], b.ema["trained"])
