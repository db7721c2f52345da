"""Bad params given through ``dvc exp run -S``: the stage refuses them in one line, before any work.

(tests/test_params.py covers the schema and every stage script run directly.)
DVC writes the ``-S`` values into params.yaml and removes the stage's
non-persistent outputs before starting it; the stage itself must then stop at
once, name the key, the value and what is allowed, and write nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.projectcopy import copy_project, dvc_env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("params") / "petseg")


@pytest.mark.slow  # dvc exp run
@pytest.mark.parametrize("setting,message", [
    ("train.lr=-1", "error: params.yaml: train.lr = -1.0 is invalid; allowed: a number > 0.0"),
    ("+train.learnig_rate=0.1", "error: params.yaml: unknown key train.learnig_rate; known keys here: train.epochs"),
])  # fmt: skip
def test_dvc_exp_run_with_a_bad_param_fails_cleanly(project: Path, setting: str, message: str) -> None:
    # the download stage reads no train.* param, but every stage validates the whole file first
    done = subprocess.run(
        ["dvc", "exp", "run", "-S", setting, "download"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=dvc_env(),
    )
    subprocess.run(["git", "checkout", "-q", "params.yaml"], cwd=project, check=True)  # dvc leaves -S applied
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert message in output
    assert "exited with 2" in output and "Traceback" not in output
    assert not [path for path in project.glob("data/**/*") if path.is_file()]  # nothing downloaded or generated
