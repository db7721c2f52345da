"""Inference inputs that tests/test_infer.py does not cover, and outputs that must stay inside the output folder.

Folders named like images, symbolic-link loops and dangling links, pipes and
devices, unreadable files (for real, also when the tests run as root), absurd
aspect ratios, planted links at output names, a stale temporary file from a
killed run, and an output folder that cannot be created.
"""

from __future__ import annotations

import ast
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petseg.checkpoint import Checkpoint, save_checkpoint
from petseg.data.imaging import UnusableFile, read_photo
from petseg.errors import DataError, OutputError
from petseg.inference import infer_folder, raw_test_images
from petseg.io import TEMP_MARK
from petseg.models import build_model
from petseg.plotting.panel import GAP, LABEL_HEIGHT, tile_size
from tests.forkrun import in_child

NOBODY = 65534


def picture(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 7 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny UNet: these tests are about files, not predictions."""
    path = tmp_path_factory.mktemp("model") / "best.pt"
    save_checkpoint(
        path,
        Checkpoint(
            model_name="unet",
            model_params={"base_channels": 4},
            model=build_model("unet", base_channels=4).state_dict(),
            image_size=32,
            epoch=1,
        ),
    )
    return path


def test_odd_entries_are_skipped_with_a_reason_and_the_run_goes_on(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    picture(40, 30).save(images / "cat.jpg")
    (images / "album.jpg").mkdir()  # a folder named like an image
    (images / "holidays").mkdir()  # a plain subfolder: not searched, noted
    picture(20, 20).save(images / "holidays" / "beach.jpg")
    (images / "loop.jpg").symlink_to("loop.jpg")
    (images / "ping.png").symlink_to("pong.png")
    (images / "pong.png").symlink_to("ping.png")
    (images / "dangling.jpg").symlink_to("deleted.jpg")
    (images / "album_link.jpg").symlink_to(images / "album.jpg")
    os.mkfifo(images / "pipe.jpg")  # opening it would block for ever
    (images / "zero.png").symlink_to("/dev/zero")  # endless bytes
    (images / "outside.jpg").symlink_to(tmp_path / "cat_elsewhere.jpg")
    picture(50, 40).save(tmp_path / "cat_elsewhere.jpg")  # a link to a real image outside the folder is fine

    with caplog.at_level(logging.INFO, logger="petseg"):
        result = infer_folder(checkpoint, images, tmp_path / "out", device="cpu", progress=False)
    assert sorted(path.name for path in result.written) == ["cat_mask.png", "outside_mask.png"]
    reasons = {item.path.name: item.reason for item in result.skipped}
    assert reasons == {
        "album.jpg": "not a file: a folder, not an image file",
        "album_link.jpg": "not a file: a folder, not an image file",
        "loop.jpg": "not a file: a symbolic link loop",
        "ping.png": "not a file: a symbolic link loop",
        "pong.png": "not a file: a symbolic link loop",
        "dangling.jpg": "not a file: a broken symbolic link (its target deleted.jpg does not exist)",
        "pipe.jpg": "not a file: not a regular file (a device, pipe or socket)",
        "zero.png": "not a file: not a regular file (a device, pipe or socket)",
    }
    assert "1 subfolder(s)" in caplog.text and "holidays" in caplog.text
    assert f"skipped {images / 'loop.jpg'}: not a file: a symbolic link loop" in caplog.text


def _load_as_nobody(path: Path) -> str:
    """read_photo(path) in a forked process running as user nobody: 'ok' or 'kind|reason' of the skip."""

    def work() -> str:
        try:
            read_photo(path)
            return "ok"
        except UnusableFile as skip:
            return f"{skip.kind}|{skip}"

    message = in_child(work, user=NOBODY)
    return ast.literal_eval(message.removeprefix("ok: ")) if message.startswith("ok: ") else f"error|{message}"


def test_an_unreadable_file_is_skipped_for_real(checkpoint: Path) -> None:
    # chmod 000 does not stop root, so as root the check runs in a child process that has become user nobody
    folder = Path(tempfile.mkdtemp(prefix="petseg-unreadable-"))
    try:
        os.chmod(folder, 0o755)
        locked = folder / "locked.jpg"
        picture(40, 30).save(locked)
        os.chmod(locked, 0)
        if os.geteuid() == 0:
            kind, reason = _load_as_nobody(locked).split("|", 1)
        else:
            with pytest.raises(UnusableFile) as info:
                read_photo(locked)
            kind, reason = info.value.kind, str(info.value)
        assert kind == "unreadable" and "Permission denied" in reason
    finally:
        os.chmod(folder / "locked.jpg", 0o644)
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()


@pytest.mark.parametrize("width,height", [(1, 5000), (5000, 1), (1, 1), (3, 4000)])
def test_absurd_aspect_ratios_give_masks_at_their_own_size(
    checkpoint: Path, tmp_path: Path, width: int, height: int
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    picture(width, height).save(images / "odd.png")
    infer_folder(checkpoint, images, tmp_path / "out", device="cpu", progress=False)
    with Image.open(tmp_path / "out" / "odd_mask.png") as mask:
        assert mask.size == (width, height) and mask.mode == "L"
    with Image.open(tmp_path / "out" / "odd_panel.png") as panel:
        tile_width, tile_height = tile_size(width, height)  # four tiles (no ground truth) under two text lines
        assert panel.size == (4 * tile_width + 3 * GAP, 2 * LABEL_HEIGHT + tile_height)


def test_outputs_never_leave_the_output_folder(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    picture(40, 30).save(images / "cat.jpg")
    out = tmp_path / "out"
    out.mkdir()
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (out / "cat_mask.png").symlink_to(precious)  # planted: writing through it would overwrite precious.txt
    (out / "cat_panel.png").symlink_to(tmp_path / "made_elsewhere.png")
    stale = out / f".cat_mask.png{TEMP_MARK}999999999-abc"  # left by a killed run (no such process)
    stale.write_bytes(b"half")

    infer_folder(checkpoint, images, out, device="cpu", progress=False)
    assert precious.read_text() == "keep me\n" and not (tmp_path / "made_elsewhere.png").exists()
    assert not (out / "cat_mask.png").is_symlink() and not (out / "cat_panel.png").is_symlink()
    with Image.open(out / "cat_mask.png") as mask:
        assert mask.size == (40, 30)
    assert sorted(p.name for p in out.iterdir()) == ["cat_mask.png", "cat_panel.png"]  # the stale file is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out", "precious.txt"]


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    picture(40, 30).save(images / "cat.jpg")
    blocker = tmp_path / "predictions"
    blocker.write_text("a file where the output folder should be\n")
    with pytest.raises(OutputError, match=rf"^{blocker / 'cat_mask.png'}: cannot write: "):
        infer_folder(checkpoint, images, blocker, device="cpu", progress=False)
    assert blocker.read_text() == "a file where the output folder should be\n"


def test_hostile_names_in_the_test_list_are_refused(tmp_path: Path) -> None:
    annotations = tmp_path / "raw" / "annotations"
    annotations.mkdir(parents=True)
    for name in ("../../etc/passwd", "..\\evil", ".hidden"):
        (annotations / "test.txt").write_text(f"cat_1 1 1 1\n{name} 1 1 1\n")
        with pytest.raises(DataError, match=r"test\.txt, line 2: .* is not a valid image name"):
            raw_test_images(tmp_path / "raw")
