"""Runs read from git as DVC left them: DVC's own experiments, and a dvc.lock that does not parse.

petseg.compare.revisions finds experiments by DVC's refs layout (refs/exps/<baseline sha[:2]>/<rest>/<name>),
which is no public interface of DVC: the first test checks it against ``dvc exp show --json`` on experiments
made by the installed DVC itself (``dvc exp run``), in a project of a single fast stage that writes both
models' per-image tables from ``train.seed``.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from petseg.compare.runs import code_hashes, read_runs
from petseg.errors import DataError
from tests.paramsfile import REPO, default_params
from tests.projectcopy import GIT_USER, run

pytestmark = pytest.mark.slow  # dvc repro and dvc exp run

MODELS = ("unet", "resnet34_unet")
# The stage: each model's per-image table of 20 test images, drawn from train.seed.
TABLES = """\
import numpy as np
import yaml

from petseg.evaluation.tables import PerImage, write_per_image_csv

seed = yaml.safe_load(open("params.yaml"))["train"]["seed"]
rng = np.random.default_rng(seed)
names = [f"img_{i:02d}" for i in range(20)]
for model in ("unet", "resnet34_unet"):
    dice = rng.uniform(0.6, 0.9, len(names))
    scores = {"dice": dice, "iou": dice / (2 - dice), "dice_ignore_border": dice, "boundary_iou": dice / 2}
    write_per_image_csv(f"plots/evaluate/{model}.csv", PerImage(names, scores, [None] * 20, [None] * 20))
"""
DVC_YAML = {
    "stages": {
        "evaluate": {
            "cmd": f"{sys.executable} tables.py",
            "deps": ["tables.py", "petseg/code.py"],  # under petseg/: code, part of a run's recipe
            "params": ["train.seed"],
            "outs": [{f"plots/evaluate/{model}.csv": {"cache": False}} for model in MODELS],
        }
    }
}


@dataclass
class Project:
    root: Path
    first: str  # the first commit: experiments seed-1 and seed-2
    second: str  # HEAD, with other code: an experiment named seed-1 too, and a queued one


def commit(root: Path, message: str) -> str:
    run(root, "git", "add", "-A")
    run(root, "git", *GIT_USER, "commit", "-qm", message)
    return run(root, "git", "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("revisions") / "project"
    (root / "petseg").mkdir(parents=True)
    (root / "plots" / "evaluate").mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    (root / "tables.py").write_text(TABLES)
    (root / "petseg" / "code.py").write_text("VERSION = 1\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # offline: no analytics, no update check
    run(root, "dvc", "repro", "-q")
    first = commit(root, "first run")
    for seed in (1, 2):
        run(root, "dvc", "exp", "run", "-q", "-S", f"train.seed={seed}", "-n", f"seed-{seed}")
    run(root, "git", "checkout", "-q", "--", ".")  # the workspace holds the last experiment's results
    (root / "petseg" / "code.py").write_text("VERSION = 2\n")
    run(root, "dvc", "repro", "-q")
    second = commit(root, "other code")
    run(root, "dvc", "exp", "run", "-q", "-S", "train.seed=1", "-n", "seed-1")  # a name the first commit has too
    run(root, "dvc", "exp", "run", "-q", "--queue", "-S", "train.seed=3", "-n", "queued")  # never run
    run(root, "git", "checkout", "-q", "--", ".")
    return Project(root, first, second)


def dvc_experiments(root: Path) -> dict[str, list[tuple[str, str]]]:
    """What DVC's public interface lists: baseline commit -> [(name, commit sha), ...] of its finished experiments."""
    shown = json.loads(run(root, "dvc", "exp", "show", "--json", "--all-commits"))
    return {
        baseline["rev"]: [
            (exp["name"], exp["revs"][0]["rev"])
            for exp in baseline["experiments"] or []
            if exp["executor"] is None or exp["executor"]["state"] == "success"
        ]
        for baseline in shown
        if baseline["rev"] != "workspace"
    }


def test_the_experiments_are_those_the_installed_dvc_lists(project: Project):
    from petseg.compare.revisions import experiment_refs, experiments_of, read_text_at, resolve

    listed = dvc_experiments(project.root)
    assert sorted(listed) == sorted([project.first, project.second])
    for baseline, experiments in listed.items():
        assert sorted(experiments_of(baseline, project.root)) == sorted(experiments)
    assert [name for name, _ in experiments_of(project.first, project.root)] == ["seed-1", "seed-2"]  # oldest first
    # DVC's own refs (refs/exps/exec/..., refs/exps/celery/stash: the queued one) are no experiments
    assert sorted(experiment_refs(project.root)) == ["seed-1", "seed-2"]
    # a name two commits have: the experiment of HEAD's commit; a name only the first has: that one
    assert resolve("seed-1", project.root) == dict(listed[project.second])["seed-1"]
    assert resolve("seed-2", project.root) == dict(listed[project.first])["seed-2"]
    params = yaml.safe_load(read_text_at("seed-2", "params.yaml", project.root))
    assert params["train"]["seed"] == 2

    runs = read_runs(MODELS, rev=project.first, repo=project.root, workspace=False)
    assert [(r.label, r.seed) for r in runs] == [(project.first, 42), ("seed-1", 1), ("seed-2", 2)]
    assert all(set(r.tables) == set(MODELS) for r in runs)
    assert len({r.recipe() for r in runs}) == 1 and runs[0].code  # one recipe, its code read from dvc.lock
    later = read_runs(MODELS, rev=project.second, repo=project.root, workspace=False)
    assert [r.label for r in later] == [project.second, "seed-1"]
    assert later[0].code != runs[0].code  # petseg/code.py changed: another recipe


def compare(root: Path, *args: str):
    import subprocess

    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "compare.py"), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "lock, says",
    [
        ("stages:\n  evaluate: [unclosed\n", "not valid YAML"),
        ("stages:\n- evaluate\n- train\n", "not a dvc.lock"),
    ],
    ids=["not-yaml", "not-a-lock"],
)
def test_a_dvc_lock_that_does_not_parse_is_an_error_naming_it(project: Project, tmp_path: Path, lock: str, says: str):
    """A commit whose dvc.lock is broken: its code is unknown, and read as no code it would pool runs of other code."""
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project.root), str(clone))
    (clone / "dvc.lock").write_text(lock)
    broken = commit(clone, "a broken dvc.lock")
    with pytest.raises(DataError, match=rf"^dvc\.lock at HEAD: {says}"):
        read_runs(MODELS, repo=clone, workspace=False)
    done = compare(clone, "--experiments")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: dvc.lock at HEAD: {says}")
    (clone / "dvc.lock").write_text((project.root / "dvc.lock").read_text())
    commit(clone, "dvc.lock mended")
    done = compare(clone, "--against", broken)  # the other side's dvc.lock is broken
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(f"error: dvc.lock at {broken}: ")


def test_a_run_without_a_dvc_lock_has_no_code_recorded(project: Project, tmp_path: Path):
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project.root), str(clone))
    run(clone, "git", "rm", "-q", "dvc.lock")
    commit(clone, "no dvc.lock")
    (only,) = read_runs(MODELS, repo=clone, workspace=False)
    assert only.code == "" and set(only.tables) == set(MODELS)
    assert code_hashes(None) == "" and code_hashes("", "dvc.lock") == ""  # no file, and an empty one
