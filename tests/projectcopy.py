"""A fresh copy of the project (what a clone holds) in a temporary git repository, for tests that run DVC."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.paramsfile import REPO, with_overrides

GIT_USER = ["-c", "user.email=t@example.com", "-c", "user.name=t"]


def copy_project(root: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the project's files to ``root``, apply params ``overrides``, and commit them in a new git repository."""
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
    params = with_overrides(yaml.safe_load((root / "params.yaml").read_text()), overrides or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", *GIT_USER, "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", *GIT_USER, "commit", "-qm", "project"], cwd=root, check=True)
    return root


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
