"""Outputs under real SIGKILLs and a real full disk, and damaged files of every kind a stage reads.

Kills and file-size limits happen in real processes: forked children of the
test process (cheap: torch is already imported) or stage scripts and DVC
itself as subprocesses. A file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored
so that writes fail with EFBIG) stands in for a full disk without root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from petseg.data.cache import load_split
from petseg.data.preprocess import preprocess
from petseg.data.synthetic import generate
from petseg.errors import DataError
from petseg.evaluation import evaluate_models
from petseg.evaluation.tables import read_per_image_csv
from petseg.io import TEMP_MARK, atomic_path, remove_stale_temps, save_npy, write_json, write_text
from petseg.models import build_model
from petseg.params import load_params
from petseg.plotting.panel import save_png
from petseg.training import fit
from petseg.training.log import read_metric
from tests.cachemaker import write_cache
from tests.forkrun import in_child
from tests.paramsfile import REPO, evaluate_params, train_params, unet, write_params
from tests.projectcopy import copy_project, dvc_env


def temps(directory: Path) -> list[Path]:
    return sorted(directory.rglob(f".*{TEMP_MARK}*"))


# ------------------------------------------------------------------ atomic writes under SIGKILL


def versions() -> list[dict]:
    """Two different versions of every kind of output the stages write."""
    result = []
    for version in range(2):
        torch.manual_seed(version)
        model = build_model("unet", base_channels=4)
        rng = np.random.default_rng(version)
        result.append({
            "checkpoint": Checkpoint(model_name="unet", model_params={"base_channels": 4}, model=model.state_dict(),
                                     image_size=32, epoch=version + 1),
            "array": rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8),
            "json": {"unet": {"dice_mean": 0.5 + version / 10, "pad": "x" * 200_000}},
            "csv": "name,dice,iou\n" + "".join(f"img_{i},{version}.0,{version}.0\n" for i in range(20_000)),
            "png": Image.fromarray(rng.integers(0, 256, (400, 400), dtype=np.uint8), mode="L"),
        })  # fmt: skip
    return result


def write_all(directory: Path, version: dict) -> None:
    save_checkpoint(directory / "last.pt", version["checkpoint"], also=[directory / "best.pt"])
    save_npy(directory / "images.npy", version["array"])
    write_json(directory / "evaluate.json", version["json"])
    write_text(directory / "unet.csv", version["csv"])
    save_png(directory / "mask.png", version["png"])


def which_version(directory: Path, candidates: list[dict]) -> dict[str, int]:
    """For each output, the version it holds whole; fails on a half-written or mixed file."""
    found = {}
    for name in ("last.pt", "best.pt"):
        epoch = load_checkpoint(directory / name).epoch
        weights = load_checkpoint(directory / name).model
        expected = candidates[epoch - 1]["checkpoint"].model
        assert all(torch.equal(weights[key], expected[key]) for key in expected), name
        found[name] = epoch - 1
    array = np.load(directory / "images.npy")
    found["images.npy"] = next(i for i, v in enumerate(candidates) if np.array_equal(array, v["array"]))
    content = json.loads((directory / "evaluate.json").read_text())
    found["evaluate.json"] = next(i for i, v in enumerate(candidates) if content == v["json"])
    text = (directory / "unet.csv").read_text()
    found["unet.csv"] = next(i for i, v in enumerate(candidates) if text == v["csv"])
    with Image.open(directory / "mask.png") as png:
        pixels = np.asarray(png)
    found["mask.png"] = next(i for i, v in enumerate(candidates) if np.array_equal(pixels, np.asarray(v["png"])))
    return found


def test_writers_killed_mid_write_leave_the_old_or_the_new_file_whole(tmp_path: Path) -> None:
    candidates = versions()
    write_all(tmp_path, candidates[0])
    rng = random.Random(0)
    leftovers = 0
    for _ in range(6):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a writer that rewrites every output, alternating versions, until killed
            try:
                os.close(read)
                for round_number in range(10**6):
                    write_all(tmp_path, candidates[(round_number + 1) % 2])
                    if round_number == 0:
                        os.write(write, b"!")
            finally:
                os._exit(1)
        os.close(write)
        assert os.read(read, 1) == b"!"  # one whole round written: the kill lands in a later one
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
        which_version(tmp_path, candidates)  # every file is whole: one version or the other
        leftovers += len(temps(tmp_path))
        remove_stale_temps(tmp_path)  # the writer is dead: its temporary files go
        assert temps(tmp_path) == []
    assert leftovers > 0  # at least one kill really landed mid-write


def test_temporary_files_of_a_live_writer_are_not_cleaned_up(tmp_path: Path) -> None:
    read, write = os.pipe()
    release_read, release_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a slow writer: holds its temporary file open until released
        try:
            with atomic_path(tmp_path / "report.json") as temp:
                temp.write_text("{}")
                os.write(write, b"!")
                os.read(release_read, 1)
        finally:
            os._exit(0)
    assert os.read(read, 1) == b"!"
    try:
        remove_stale_temps(tmp_path)  # e.g. a second run started by mistake while the first still writes
        assert len(temps(tmp_path)) == 1
    finally:
        os.write(release_write, b"!")
        os.waitpid(pid, 0)
    assert json.loads((tmp_path / "report.json").read_text()) == {} and temps(tmp_path) == []


def test_killed_preprocess_keeps_the_old_cache_and_runs_again(tmp_path: Path) -> None:
    raw = generate(tmp_path / "raw", 60, 20, 0, workers=1, progress=False)
    cache = tmp_path / "cache"
    preprocess(raw, cache, image_size=32, workers=1, progress=False)
    old = {path: path.read_bytes() for path in sorted(cache.rglob("*")) if path.is_file()}

    pid = os.fork()
    if pid == 0:  # a rebuild at another size, killed while its arrays are half written
        try:
            preprocess(raw, cache, image_size=64, workers=1, jpeg_draft=False, progress=False)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 30
    while not temps(cache) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert temps(cache), "the kill came too late to land mid-write"
    left = [path for path in sorted(cache.rglob("*")) if path.is_file() and path not in temps(cache)]
    assert {path: path.read_bytes() for path in left} == old
    assert load_split(cache, "train").image_size == 32

    preprocess(raw, cache, image_size=64, workers=1, progress=False)
    assert temps(cache) == [] and load_split(cache, "test").image_size == 64


@pytest.mark.slow
def test_dvc_repro_after_dvc_itself_was_killed_mid_stage(tmp_path: Path) -> None:
    """SIGKILL to DVC's whole process group mid-preprocess; a plain `dvc repro` then finishes the job."""
    project = copy_project(tmp_path / "petseg", {
        "data.synthetic.n_trainval": 150, "data.synthetic.n_test": 30, "data.image_size": 64,
        "preprocess.workers": 1, "preprocess.jpeg_draft": False,
    })  # fmt: skip
    env = dvc_env()
    killed = subprocess.Popen(
        ["dvc", "repro", "preprocess"],
        cwd=project,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cache = project / "data" / "cache"
    deadline = time.monotonic() + 120
    while not (cache.is_dir() and temps(cache)) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert temps(cache), "the kill came too late to land mid-write"
    assert "pid" in (project / ".dvc" / "tmp" / "rwlock").read_text()  # DVC's lock still names the dead process

    again = subprocess.run(
        ["dvc", "repro", "preprocess"], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert "had been killed. Auto removed it from the lock file" in output  # DVC clears its own stale lock
    assert "Running stage 'preprocess'" in output and "Stage 'download' didn't change" in output
    assert temps(cache) == [] and load_split(cache, "train").image_size == 64
    status = subprocess.run(["dvc", "status", "preprocess"], cwd=project, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout + status.stderr


# ----------------------------------------------------------------------------- full disk


def test_disk_full_during_training_keeps_the_previous_checkpoints(tmp_path: Path) -> None:
    cache = write_cache(tmp_path / "cache", {"train": 8, "val": 4}, image_size=32)
    params = write_params(tmp_path / "params.yaml", {
        "train.epochs": 2, "train.lr": 1e-3, "train.device": "cpu", "train.scheduler": "none",
        "models.unet.base_channels": 4, "models.unet.batch_size": 4,
    })  # fmt: skip
    values = load_params(params)
    one_epoch = dataclasses.replace(values.train, epochs=1)
    fit("unet", values.models.unet, one_epoch, cache, tmp_path / "m", progress=False)
    before = {name: (tmp_path / "m" / name).read_bytes() for name in ("best.pt", "last.pt")}
    limit = len(before["last.pt"]) // 2

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    done = subprocess.run(
        [sys.executable, "stages/train.py", "unet", "--params", str(params), "--cache", str(cache),
         "--out", str(tmp_path / "m"), "--live", str(tmp_path / "live"), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limited,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "extending from" in done.stderr  # failed writing epoch 2
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {tmp_path / 'm' / 'last.pt'}: cannot write: ")
    assert "nothing was replaced" in last_line
    for name, content in before.items():
        assert (tmp_path / "m" / name).read_bytes() == content
        assert load_checkpoint(tmp_path / "m" / name).epoch == 1
    assert temps(tmp_path / "m") == []


def test_disk_full_for_every_other_writer_names_the_file_and_keeps_the_old(tmp_path: Path) -> None:
    old = versions()[0]
    write_all(tmp_path, old)
    new = versions()[1]
    writes = {
        "images.npy": lambda: save_npy(tmp_path / "images.npy", new["array"]),
        "evaluate.json": lambda: write_json(tmp_path / "evaluate.json", new["json"]),
        "unet.csv": lambda: write_text(tmp_path / "unet.csv", new["csv"]),
        "mask.png": lambda: save_png(tmp_path / "mask.png", new["png"]),
    }
    for name, work in writes.items():
        message = in_child(work, file_limit=20_000)
        assert message.startswith(f"OutputError: {tmp_path / name}: cannot write: "), message
    assert set(which_version(tmp_path, [old]).values()) == {0}
    assert temps(tmp_path) == []


def test_disk_full_during_preprocess_names_the_cache_and_keeps_the_old_one(tmp_path: Path) -> None:
    raw = generate(tmp_path / "raw", 30, 10, 0, workers=1, progress=False)
    cache = tmp_path / "cache"
    preprocess(raw, cache, image_size=32, workers=1, progress=False)
    old = {path: path.read_bytes() for path in sorted(cache.rglob("*")) if path.is_file()}
    message = in_child(lambda: preprocess(raw, cache, image_size=128, workers=1, progress=False), file_limit=200_000)
    assert message.startswith("OutputError: ") and "cannot write: " in message, message
    assert {path: path.read_bytes() for path in sorted(cache.rglob("*")) if path.is_file()} == old
    assert temps(cache) == []


# ------------------------------------------------------------------ damaged files a stage reads


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("name,damage,complaint", [
    ("images.npy", lambda b: b"", "empty (0 bytes)"),
    ("images.npy", lambda b: b[:60], "not a valid .npy array"),
    ("images.npy", lambda b: b[: len(b) // 2], "truncated (12352 of 24704 bytes; the file was cut short)"),
    ("images.npy", lambda b: b"PK\x03\x04" + b[4:], "no NumPy header"),
    ("images.npy", lambda b: b.replace(b"(8, 32, 32, 3)", b"(8, 32, 32, 3 ", 1), "not a valid .npy array"),  # header
    ("masks.npy", lambda b: npy_bytes(np.zeros((8, 32, 32), np.float32)), "expected dtype uint8, found float32"),
    ("trimaps.npy", lambda b: npy_bytes(np.zeros((7, 32, 32), np.uint8)), "does not match images.npy"),
    ("names.txt", lambda b: b"\xff\xfe" + b, "cannot read"),
    ("names.txt", lambda b: b"only_one\n", "1 names for 8 images"),
])  # fmt: skip
def test_damaged_cache_files_are_named_by_evaluate_and_train(tmp_path: Path, name: str, damage, complaint: str) -> None:
    cache = write_cache(tmp_path / "cache", {"train": 8, "val": 8, "test": 8}, image_size=32)
    models = tmp_path / "models"
    save_checkpoint(
        models / "unet" / "best.pt",
        Checkpoint(
            model_name="unet",
            model_params={"base_channels": 4},
            model=build_model("unet", base_channels=4).state_dict(),
            image_size=32,
            epoch=1,
        ),
    )
    for split in ("test", "train"):
        path = cache / split / name
        path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as evaluated:
        evaluate_models(
            ["unet"],
            evaluate_params(),
            cache_dir=cache,
            models_dir=models,
            metrics_dir=tmp_path / "metrics",
            plots_dir=tmp_path / "plots",
            device="cpu",
        )
    with pytest.raises(DataError) as trained:
        fit(
            "unet",
            unet(base_channels=4, batch_size=4),
            train_params(epochs=1, lr=1e-3, device="cpu"),
            cache,
            tmp_path / "out",
            progress=False,
        )
    for info, split in ((evaluated, "test"), (trained, "train")):
        assert str(info.value).startswith(f"{cache / split / name}: ") and complaint in str(info.value)
        assert str(info.value).endswith("; re-create the cache with dvc repro preprocess")
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "out" / "last.pt").exists()


def test_damaged_training_logs_and_tables_are_named_by_plot(tmp_path: Path) -> None:
    log = tmp_path / "dice.tsv"
    whole = "timestamp\tstep\tdice\n1\t1\t0.5\n2\t2\t0.6\n3\t3\t0.7\n"
    log.write_text(whole[:-3])  # cut mid-number: "0.7" became "0"
    truncated = rf"^{log}: truncated the metric log \(its last line is incomplete\); re-run it: dvc repro train_unet"
    with pytest.raises(DataError, match=truncated):
        read_metric(log, "train_unet")
    log.write_text(whole + "4\t1\t0.2\n")  # a second run's rows appended to the first's
    with pytest.raises(DataError, match=rf"^{log}: epochs not in increasing order"):
        read_metric(log, "train_unet")
    log.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(DataError, match=rf"^{log}: cannot read the metric log"):
        read_metric(log, "train_unet")

    table = tmp_path / "unet.csv"
    rows = "name,dice,iou\na,0.5,0.4\nb,0.75,0.6\n"
    table.write_text(rows[:-4])
    with pytest.raises(DataError, match=rf"^{table}: truncated the per-image table"):
        read_per_image_csv(table)
    table.write_text(rows.replace("0.75", "7.5"))
    with pytest.raises(DataError, match=rf"^{table}: dice values outside \[0, 1\]"):
        read_per_image_csv(table)
