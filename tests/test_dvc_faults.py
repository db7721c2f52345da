"""Failed and refused stages under real ``dvc repro`` / ``dvc exp run`` keep every output byte for byte.

One tiny project (synthetic data, 32 px, one epoch) is trained once for the
whole module; each test then breaks one thing, runs DVC or a stage as a user
would, checks the one-line message and that every output (raw data, cache,
checkpoints, training logs, metrics, tables, plots, predictions, dvc.lock) hashes
as before, and puts the project back.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.archiveserver import Server, md5, tar_gz
from tests.paramsfile import with_overrides
from tests.projectcopy import dvc_env, reproduced_project

pytestmark = pytest.mark.slow

OUTPUTS = ["data/raw", "data/cache", "models", "dvclive", "metrics", "plots", "predictions", "dvc.lock"]


def run(project: Path, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        args, cwd=project, capture_output=True, text=True, timeout=600, env=dvc_env(), check=False, **kwargs
    )
    if check:
        assert done.returncode == 0, (
            f"{' '.join(args)} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
        )
    return done


_HASHED: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) -> content hash


def _content_hash(path: Path) -> str:
    """blake2b of the file; a file whose inode, size and mtime (ns) are as when it was hashed is not re-read."""
    info = path.stat()
    key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _HASHED:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


def snapshot(project: Path) -> dict[str, str]:
    """A hash of every output file (and dvc.lock), by path."""
    found = {}
    for name in OUTPUTS:
        root = project / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                found[str(path.relative_to(project))] = _content_hash(path)
    return found


def git_status(project: Path) -> list[str]:
    return run(project, "git", "status", "--porcelain").stdout.splitlines()


def set_params(project: Path, overrides: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(with_overrides(params, overrides), sort_keys=False))


def restore_params(project: Path) -> None:
    run(project, "git", "checkout", "-q", "params.yaml")


def error_line(done: subprocess.CompletedProcess) -> str:
    """The stage's one error line (DVC's own lines around it are not the stage's)."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stdout + done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project, reproduced once and committed (outputs in git and in DVC's cache)."""
    return reproduced_project(tmp_path_factory, "dvcfaults")[0]


@pytest.fixture
def unchanged(project: Path):
    """Every output must hash as before the test, and git must see no change but params.yaml (restored after)."""
    before = snapshot(project)
    yield
    restore_params(project)
    assert snapshot(project) == before
    assert git_status(project) == []


# ------------------------------------------------------------------ refused and failed stages keep every output


def hostile_archives(raw: Path) -> dict[str, bytes]:
    images = tar_gz(raw, "images", extra={"../escape.txt": b"out of the folder"})
    return {"/images.tar.gz": images, "/annotations.tar.gz": tar_gz(raw, "annotations")}


def truncated_archives(raw: Path) -> dict[str, bytes]:
    images = tar_gz(raw, "images")
    return {"/images.tar.gz": images[: len(images) // 2], "/annotations.tar.gz": tar_gz(raw, "annotations")}


@pytest.mark.parametrize("archives", [hostile_archives, truncated_archives])
def test_a_refused_archive_keeps_the_raw_data(
    project: Path, unchanged: None, archives: Callable[[Path], dict[str, bytes]]
) -> None:
    server = Server()
    server.files = archives(project / "data/raw/oxford-iiit-pet")
    try:
        set_params(project, {
            "data.source": "oxford-iiit-pet",
            "data.images_url": server.url("/images.tar.gz"), "data.images_md5": md5(server.files["/images.tar.gz"]),
            "data.annotations_url": server.url("/annotations.tar.gz"),
            "data.annotations_md5": md5(server.files["/annotations.tar.gz"]),
        })  # fmt: skip
        done = run(project, "dvc", "repro", check=False)
    finally:
        server.stop()
        shutil.rmtree(project / "data/downloads", ignore_errors=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    line = error_line(done)
    assert "refused" in line or "corrupt" in line or "truncated" in line, line
    assert line.endswith("data/raw/oxford-iiit-pet was left as it was")


@pytest.mark.parametrize("command", ["repro", "exp run"])
@pytest.mark.parametrize("key,value,stage", [
    ("evaluate.threshold", 1.0, "evaluate"),
    ("train.lr", -1, "train_unet"),
])  # fmt: skip
def test_a_bad_value_keeps_every_output(
    project: Path, unchanged: None, command: str, key: str, value: float, stage: str
) -> None:
    set_params(project, {key: value})
    done = run(project, "dvc", *command.split(), check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"Running stage '{stage}'" in done.stdout + done.stderr
    assert error_line(done).startswith(f"error: params.yaml: {key} = {float(value)!r} is invalid; allowed: ")


def test_a_training_run_that_hits_a_full_disk_keeps_every_output(project: Path, unchanged: None) -> None:
    limit = (project / "models/unet/last.pt").stat().st_size // 2  # DVC's own small files still fit

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    set_params(project, {"train.lr": 0.001})
    done = run(project, "dvc", "repro", "train_unet", check=False, preexec_fn=full_disk)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    line = error_line(done)
    assert "models/unet/last.pt: cannot write: " in line and "nothing was replaced" in line, line


@pytest.mark.parametrize("override,complaint", [
    ({"models.resnet34_unet.batch_size": 1},
     "error: params.yaml: models.resnet34_unet.batch_size = 1 is invalid; batch norm needs at least 2 images"),
    ({"train.nproc_per_node": 2, "models.unet.batch_size": 2},
     "error: params.yaml: models.unet.batch_size = 2 is invalid; with train.nproc_per_node = 2 each process "
     "trains on 1 image"),
    ({"models.unet.batch_size": 32},
     "error: data/cache/train: the train split holds 21 images, fewer than one batch of "
     "models.unet.batch_size = 32"),
])  # fmt: skip
def test_batches_of_one_image_are_refused_in_one_line(
    project: Path, unchanged: None, override: dict, complaint: str
) -> None:
    set_params(project, override)
    done = run(project, "dvc", "repro", check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "Expected more than 1 value per channel" not in done.stderr
    assert error_line(done).startswith(complaint)


# ------------------------------------------------------------------ checkpoints and the cache: named, with the repair


def stage(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run(project, sys.executable, "-m", *args, check=False)


def repair_command(line: str, start: str) -> list[str]:
    """The command a message names, from ``start`` up to the next comma, semicolon or parenthesis."""
    tail = line[line.index(start) :]
    for stop in (",", ";", ")"):
        tail = tail.split(stop)[0]
    return tail.split()


def test_infer_refuses_a_swapped_checkpoint_as_evaluate_does(project: Path, unchanged: None) -> None:
    best = project / "models/unet/best.pt"
    best.unlink()  # best.pt may be a hard link of last.pt: replace it, as a copy over it would
    shutil.copyfile(project / "models/resnet34_unet/best.pt", best)
    infer = stage(project, "stages.infer", "--no-progress")
    evaluate = stage(project, "stages.evaluate")
    for done in (infer, evaluate):
        assert done.returncode == 1 and "Traceback" not in done.stderr
    line = error_line(infer)
    assert line == error_line(evaluate)
    assert line.startswith("error: models/unet/best.pt: holds a resnet34_unet model, expected unet; ")
    run(project, *repair_command(line, "dvc checkout"))  # the command it names brings the right one back


def test_a_truncated_checkpoint_names_the_file_and_its_repair(project: Path, unchanged: None) -> None:
    best = project / "models/unet/best.pt"
    data = best.read_bytes()
    best.unlink()
    best.write_bytes(data[: len(data) // 2])
    done = stage(project, "stages.evaluate")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = error_line(done)
    assert line.startswith("error: models/unet/best.pt: not a readable checkpoint (corrupt or truncated?): ")
    assert "PytorchStreamReader" not in line and "dvc repro train_unet" in line
    run(project, *repair_command(line, "dvc checkout"))


def test_a_truncated_cache_array_names_dvc_repro_preprocess(project: Path, unchanged: None) -> None:
    images = project / "data/cache/train/images.npy"
    data = images.read_bytes()
    images.unlink()
    images.write_bytes(data[: len(data) // 2])
    done = stage(project, "stages.train", "unet", "--no-progress")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = error_line(done)
    assert line.startswith("error: data/cache/train/images.npy: truncated (")
    assert line.endswith("re-create the cache with dvc repro preprocess")
    output = run(project, *repair_command(line, "dvc repro preprocess")).stdout
    assert "Running stage 'preprocess'" in output  # and its bytes come back the same (checked by `unchanged`)


# ------------------------------------------------------------------ same inputs, same bytes


def test_forced_reruns_leave_git_status_and_dvc_lock_unchanged(project: Path, unchanged: None) -> None:
    # -f evaluate re-runs every stage up to evaluate (training included); then each later stage alone
    for command in (["-f", "evaluate"], ["-f", "-s", "compare"], ["-f", "-s", "plot"], ["-f", "-s", "infer"]):
        output = run(project, "dvc", "repro", *command).stdout
        assert f"Running stage '{command[-1]}'" in output
        assert git_status(project) == [], command
