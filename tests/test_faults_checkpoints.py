"""Checkpoints that are malicious, damaged, of the wrong kind or of the wrong model: refused with the file named.

Every case is a real file on disk, read by the same functions the stages use.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from petseg.checkpoint import FORMAT, Checkpoint, load_checkpoint, load_model, save_checkpoint
from petseg.errors import CheckpointError
from petseg.models import build_model
from petseg.training import fit
from tests.cachemaker import write_cache
from tests.paramsfile import REPO, train_params, unet


def tiny_state(base_channels: int = 4) -> dict:
    """The content of a petseg checkpoint for a tiny UNet (untrained: these tests never look at predictions)."""
    torch.manual_seed(0)
    model = build_model("unet", base_channels=base_channels)
    return {
        "model_name": "unet",
        "model_params": {"base_channels": base_channels},
        "model": model.state_dict(),
        "epoch": 1,
        "image_size": 32,
    }


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("good") / "best.pt"
    save_checkpoint(path, Checkpoint(**tiny_state()))
    return path


class Payload:
    """Pickles as a call of ``os.system`` that creates ``marker``: it must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def write_malicious(path: Path, marker: Path, kind: str) -> None:
    content = {"format": FORMAT, **tiny_state(), "extra": Payload(marker)}
    if kind == "zip":
        torch.save(content, path)
    elif kind == "legacy":
        torch.save(content, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle named .pt
        path.write_bytes(pickle.dumps(content, protocol=int(kind.removeprefix("pickle"))))


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle2", "pickle4"])
def test_pickled_payload_is_refused_and_never_runs(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "best.pt"
    write_malicious(path, marker, kind)
    if kind == "zip":  # the payload is real: an unsafe load runs it
        torch.load(path, weights_only=False)
        assert marker.exists()
        marker.unlink()
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "refused to load" in message or "not a readable checkpoint" in message
    if kind in ("zip", "legacy"):
        assert "refused to load" in message and "system" in message  # names what it refused
    assert not marker.exists()


def test_a_stage_refuses_a_malicious_checkpoint_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    checkpoint = tmp_path / "best.pt"
    write_malicious(checkpoint, marker, "zip")
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 120, 40)).save(images / "cat.jpg")
    done = subprocess.run(
        [sys.executable, str(REPO / "stages" / "infer.py"), "--params", str(REPO / "params.yaml"),
         "--model", str(checkpoint), "--input", str(images), "--output", str(tmp_path / "out"),
         "--device", "cpu", "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {checkpoint}: refused to load")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_truncated_checkpoints_are_named(good: Path, tmp_path: Path) -> None:
    data = good.read_bytes()
    path = tmp_path / "last.pt"
    for length in (0, 1, 64, 4096, len(data) // 2, len(data) - 22, len(data) - 1):
        path.write_bytes(data[:length])
        with pytest.raises(CheckpointError, match=rf"^{path}: (empty checkpoint|not a readable checkpoint|corrupt)"):
            load_checkpoint(path)


def test_damaged_tensor_data_fails_its_checksum(good: Path, tmp_path: Path) -> None:
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        member = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
        start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data[start + member.file_size // 2] ^= 0xFF  # one flipped byte in the middle of a weight tensor
    path = tmp_path / "best.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"^{path}: corrupt checkpoint: its data/0 does not match its checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize("content,complaint", [
    ([1, 2, 3], "not a petseg checkpoint (holds a list, not a dict)"),
    (torch.zeros(3), "not a petseg checkpoint (holds a Tensor, not a dict)"),
    ({"model": {}}, "not a petseg checkpoint (missing format, model_name, model_params, image_size, epoch)"),
    ({"format": "other/2"}, "unsupported checkpoint format 'other/2'"),
    ({"model_name": 3}, "model_name = 3 is not a string"),
    ({"model": [torch.zeros(1)]}, "model is not a state_dict"),
    ({"model": {"inc.0.weight": "weights"}}, "model is not a state_dict"),
    ({"model_params": ["base_channels"]}, "model_params is not a mapping"),
    ({"epoch": "3"}, "epoch = '3' (expected an integer >= 0)"),
    ({"image_size": 0}, "image_size = 0 (expected an integer >= 1)"),
])  # fmt: skip
def test_files_that_are_not_petseg_checkpoints(tmp_path: Path, content, complaint: str) -> None:
    path = tmp_path / "best.pt"
    if isinstance(content, dict) and not (set(content) == {"model"} and content["model"] == {}):
        content = {"format": FORMAT, **tiny_state(), **content}
    torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and complaint in str(info.value)


def test_other_files_named_like_checkpoints(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    array = tmp_path / "array.pt"
    np.save(array.with_suffix(".npy"), np.zeros(4))
    array.with_suffix(".npy").rename(array)
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    for path, complaint in (
        (text, "not a readable checkpoint"),
        (array, "not a readable checkpoint"),
        (folder, "not a file"),
        (tmp_path / "gone.pt", "checkpoint not found"),
    ):
        with pytest.raises(CheckpointError, match=rf"^{path}: {complaint}"):
            load_checkpoint(path)


@pytest.mark.parametrize("change,complaint", [
    ({"model_params": {"base_channels": 8}}, "99 tensor(s) of another shape (inc.0.weight 4x3x3x3 (model 8x3x3x3)"),
    ({"model_params": {"base_channels": 10**7}}, "of another shape"),  # compared on the meta device: nothing allocated
    ({"model_name": "segformer"}, "cannot rebuild its segformer model: unknown model 'segformer'"),
    ({"model_params": {"depth": 3}}, "unexpected keyword argument 'depth'"),
    ({"model_name": "resnet34_unet", "model_params": {"encoder_weights": None}}, "tensor(s) missing (stem.0.weight"),
])  # fmt: skip
def test_weights_of_another_model_are_refused_concisely(tmp_path: Path, change: dict, complaint: str) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, Checkpoint(**{**tiny_state(), **change}))
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and complaint in message
    assert len(message) < 600  # a summary, not torch's list of every key


def test_training_names_a_corrupt_best_checkpoint_beside_a_good_last(tmp_path: Path) -> None:
    cache = write_cache(tmp_path / "cache", {"train": 8, "val": 4}, image_size=32)
    section, config = (
        unet(base_channels=4, batch_size=4),
        train_params(epochs=1, lr=1e-3, scheduler="none", device="cpu"),
    )
    fit("unet", section, config, cache, tmp_path / "m", progress=False)
    best = tmp_path / "m" / "best.pt"
    data = best.read_bytes()
    best.unlink()  # best.pt and last.pt may share one inode (a hard link): damage a copy, as a cut transfer would
    best.write_bytes(data[:2000])
    with pytest.raises(CheckpointError, match=rf"^{best}: not a readable checkpoint"):
        fit(
            "unet",
            section,
            train_params(epochs=2, lr=1e-3, scheduler="none", device="cpu"),
            cache,
            tmp_path / "m",
            progress=False,
        )
    assert load_checkpoint(tmp_path / "m" / "last.pt").epoch == 1  # untouched
