"""Shared storage: what one machine computed is ``dvc pull``-ed on another instead of recomputed.

A small real pipeline in a temporary git repository (a tensor cache, then the
train stage on it, with the DVC features the real train stages use: cached
outputs, ``persist`` checkpoints, ``cache: false`` metrics and plots) is pushed
to a local-folder remote; the DVC cache and the outputs are deleted, pulled
back byte for byte, and DVC then finds nothing to do. An S3, GCS, Azure or SSH
remote differs only in its URL (and the ``dvc[...]`` extra it needs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paramsfile import REPO, write_params

pytestmark = pytest.mark.slow  # real dvc push and pull

MAKE_CACHE = f"""\
import sys
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
from tests.cachemaker import write_cache
write_cache(Path("data/cache"), {{"train": 16, "val": 8}}, image_size=32)
"""

DVC_YAML = f"""\
stages:
  cache:
    cmd: python make_cache.py
    deps:
      - make_cache.py
    outs:
      - data/cache
  train_unet:
    cmd: python {REPO / "stages" / "train.py"} unet --no-progress
    deps:
      - data/cache
    params:
      - train
      - models.unet
    outs:
      - models/unet/best.pt:
          persist: true
      - models/unet/last.pt:
          persist: true
      - dvclive/unet/plots:
          cache: false
    metrics:
      - dvclive/unet/metrics.json:
          cache: false
"""

OUTPUTS = ("data/cache/train/images.npy", "data/cache/val/masks.npy", "models/unet/best.pt", "models/unet/last.pt")


def digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tool(*args: str, cwd: Path) -> str:
    """Run git or dvc (this interpreter's) in ``cwd``; fail with its output."""
    command = ["git", *args[1:]] if args[0] == "git" else [sys.executable, "-m", "dvc", *args[1:]]
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_push_delete_pull_round_trip_through_a_local_folder_remote(tmp_path: Path):
    repo, remote = tmp_path / "project", tmp_path / "shared-storage"
    repo.mkdir()
    tool("git", "init", "-q", cwd=repo)
    tool("dvc", "init", "-q", cwd=repo)
    (repo / "make_cache.py").write_text(MAKE_CACHE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    write_params(
        repo / "params.yaml",
        {"train.epochs": 1, "train.device": "cpu", "models.unet.base_channels": 4, "models.unet.batch_size": 8},
    )
    tool("git", "add", ".", cwd=repo)
    tool("git", "commit", "-q", "-m", "pipeline", cwd=repo)  # DVCLive needs a commit to start from
    tool("dvc", "repro", "-q", cwd=repo)
    tool("git", "add", ".", cwd=repo)
    tool("git", "commit", "-q", "-m", "results", cwd=repo)
    before = {name: digest(repo / name) for name in OUTPUTS}

    tool("dvc", "remote", "add", "-d", "shared", str(remote), cwd=repo)
    tool("dvc", "push", "-q", cwd=repo)
    assert any(p.is_file() for p in remote.rglob("*"))

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data" / "cache")
    for checkpoint in ("best.pt", "last.pt"):
        (repo / "models" / "unet" / checkpoint).unlink()
    tool("dvc", "pull", "-q", cwd=repo)

    assert {name: digest(repo / name) for name in OUTPUTS} == before
    assert json.loads(tool("dvc", "status", "--json", cwd=repo)) == {}  # nothing to reproduce
    assert json.loads(tool("dvc", "status", "--cloud", "--json", cwd=repo)) == {}  # cache and remote in sync
    assert json.loads(tool("dvc", "metrics", "show", "--json", cwd=repo))  # metrics stay in git (cache: false)
    assert tool("git", "status", "--porcelain", cwd=repo) == " M .dvc/config\n"  # the remote, to commit
