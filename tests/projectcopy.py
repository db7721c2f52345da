"""A fresh copy of the project (what a clone holds) in a temporary git repository, for tests that run DVC."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

from tests.paramsfile import REPO, with_overrides, with_test_precision

GIT_USER = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
# The tiny project of the DVC end-to-end modules: synthetic data at 32 px, one epoch, small batches.
TINY = {
    "data.synthetic.n_trainval": 24,  # 21 train + 3 val (every 10th name is validation)
    "data.synthetic.n_test": 12,
    "data.image_size": 32,
    "preprocess.workers": 1,
    "train.epochs": 1,
    "train.device": "cpu",
    "models.unet.base_channels": 4,
    "models.unet.batch_size": 4,
    "models.resnet34_unet.batch_size": 4,
    "evaluate.batch_size": 12,
    "evaluate.n_worst": 2,
}


def copy_project(root: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the project's files to ``root``, apply params ``overrides``, and commit them in a new git repository.

    ``train.precision`` is the test switch's (tests/paramsfile.py), where it is set, unless ``overrides`` sets it.
    """
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params = with_overrides(with_test_precision(yaml.safe_load((root / "params.yaml").read_text())), overrides or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", *GIT_USER, "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", *GIT_USER, "commit", "-qm", "project"], cwd=root, check=True)
    return root


def reproduced_project(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, str]:
    """A copy of the TINY project after its first ``dvc repro``, committed; and that repro's output.

    The first module of the session that asks for it copies the project, runs ``dvc repro`` and commits
    (under a file lock: pytest-xdist's workers share the folder above their own temporary folders); each
    module then gets a copy of its own: the workspace and git copied, DVC's cache hard-linked (DVC never
    changes a cache file in place; the tests change workspace files only).
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this session's folder, above every worker's own
    built, output_file = shared / "reproduced" / "petseg", shared / "reproduced.out"
    with FileLock(str(shared / "reproduced.lock")):
        if not output_file.is_file():
            shutil.rmtree(built.parent, ignore_errors=True)
            built.mkdir(parents=True)
            copy_project(built, TINY)
            output = run(built, "dvc", "repro")
            run(built, "git", "add", "-A")
            run(built, "git", *GIT_USER, "commit", "-qm", "first run")
            output_file.write_text(output)
    target = tmp_path_factory.mktemp(name) / "petseg"
    cache = built / ".dvc" / "cache"

    def not_the_cache(folder: str, names: list[str]) -> list[str]:
        return ["cache"] if folder == str(cache.parent) else []

    shutil.copytree(built, target, symlinks=True, ignore=not_the_cache)
    shutil.copytree(cache, target / ".dvc" / "cache", copy_function=os.link)
    return target, output_file.read_text()


def dvc_env() -> dict[str, str]:
    """The environment for DVC commands: unbuffered output, and the project's own .dvc/config keeps DVC offline."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DVC_NO_ANALYTICS", None)
    return env


def run(project: Path, *args: str, timeout: float = 900) -> str:
    """Run a command in the project as a user would (DVC's environment); its output, or a failed assertion with it."""
    result = subprocess.run(args, cwd=project, capture_output=True, text=True, timeout=timeout, env=dvc_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{output[-4000:]}"
    return output


def stages_run(output: str) -> list[str]:
    """The stages a dvc repro or exp run ran, in order, from its output."""
    return re.findall(r"Running stage '([^']+)'", output)
