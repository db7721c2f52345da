"""DVC's queue makes seed replicates of two recipes, the seed study reads and draws them, and a clone pulls it.

A project of its own (a copy of the session's tiny project after its first run, tests/projectcopy.py),
so that this module and tests/test_pipeline_e2e.py run on different pytest-xdist workers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from petseg.models import MODEL_NAMES, MODELS
from tests.projectcopy import dvc_env, reproduced_project, run

pytestmark = pytest.mark.slow  # three queued experiments on the reproduced tiny project, then a clone pulls them

OTHER_LR = 0.006  # the second recipe: the committed one (train.lr 0.003) at twice the learning rate
STUDY = ("--experiments", "--by", "train.lr")
PLOT_IDS = ["study/val_dice", "study/train_loss", "study/forest", "study/images"]


def compare(project: Path, *args: str) -> str:
    return run(project, sys.executable, "-m", "stages.compare", *STUDY, *args)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny copy of the project whose first run is committed (seed 42), and three queued experiments:
    seed 0 of the committed recipe, seeds 0 and 1 at twice its learning rate (two recipes x two seeds)."""
    project = reproduced_project(tmp_path_factory, "queue")[0]
    run(project, "dvc", "exp", "run", "--queue", "-S", "train.seed=0")
    run(project, "dvc", "exp", "run", "--queue", "-S", "train.seed=0,1", "-S", f"train.lr={OTHER_LR}")
    # The workers are daemons that keep `dvc queue start`'s stdout: a pipe would hold this test until they exit,
    # and a worker whose idle monitor died (a kombu filesystem-broker race) never does. So: a file, then poll.
    with open(project / "queue-start.log", "w") as log:
        started = subprocess.run(
            ["dvc", "queue", "start", "-j", "2"], cwd=project, stdout=log, stderr=subprocess.STDOUT, env=dvc_env()
        )
    assert started.returncode == 0, (project / "queue-start.log").read_text()
    deadline, status = time.monotonic() + 900, ""
    while time.monotonic() < deadline:
        polled = subprocess.run(["dvc", "queue", "status"], cwd=project, capture_output=True, text=True, env=dvc_env())
        # a poll may read a message the filesystem broker is still writing (a JSONDecodeError): the next one reads it
        if polled.returncode == 0:
            status = polled.stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                break
        time.sleep(8)  # each `dvc queue status` costs a second or two of CPU
    run(project, "dvc", "queue", "stop", "--kill")  # idle workers too
    assert status.count("Success") >= 3 and "Failed" not in status, status
    return project


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_queued_seeds_of_two_recipes_are_compared_and_drawn(project: Path):
    shown = json.dumps(json.loads(run(project, "dvc", "exp", "show", "--json")))
    assert '"seed": 0' in shown and '"seed": 1' in shown
    output = compare(project, "--json", "study.json", "--plots", "study")
    report = json.loads((project / "study.json").read_text())
    # the commit's own run (seed 42) and its queued seed 0; seeds 0 and 1 at the other learning rate
    groups = {group["name"]: group for group in report["groups"]}
    assert sorted(groups) == sorted(["train.lr=0.003", f"train.lr={OTHER_LR}"])
    assert sorted(groups["train.lr=0.003"]["seeds"]) == [0, 42] and groups["train.lr=0.003"]["runs"][0] == "HEAD"
    assert sorted(groups[f"train.lr={OTHER_LR}"]["seeds"]) == [0, 1]
    assert all(d["n_seeds_a"] == d["n_seeds_b"] == 2 and d["includes_training_noise"] for d in report["differences"])
    assert all(d["ci95_low"] <= d["diff"] <= d["ci95_high"] for d in report["differences"])
    between = [d for d in report["differences"] if d["model"] is not None]
    assert {d["model"] for d in between} == set(MODEL_NAMES) and "2 vs 2 seeds" in output

    out = project / "study"
    for name in ("curves.png", "forest.png", "images.png"):
        assert (out / name).stat().st_size > 10_000, name
    forest = json.loads((out / "forest.json").read_text())
    assert len(forest) == len(report["differences"])
    for row, record in zip(forest, report["differences"]):
        assert {k: row[k] for k in record} == record  # diff, ci95_low, ci95_high and every other key, as reported
    bands = read_csv(out / "curves_val_dice.csv")
    recipes = {row["recipe"] for row in bands}
    assert recipes == {"train.lr=0.003 (2 seeds)", f"train.lr={OTHER_LR} (2 seeds)"}
    assert {row["model"] for row in bands} == {info.label for info in MODELS.values()}
    assert all(float(r["low"]) <= float(r["mean"]) <= float(r["high"]) and r["n_seeds"] == "2" for r in bands)
    images = read_csv(out / "images.csv")
    assert len(images) == 12 * (len(MODEL_NAMES) - 1) and {r["n_seeds"] for r in images} == {"2"}

    page = run(project, "dvc", "plots", "show", *PLOT_IDS, "-o", "study/page")
    assert "study/page/index.html" in page
    html = (out / "page" / "index.html").read_text()
    for title in ("Validation Dice per epoch", "Training loss per epoch", "Differences over seeds", "Per-image"):
        assert title in html, title


def lock_md5(project: Path, experiment: str, path: str) -> str:
    """The md5 that an experiment's dvc.lock records for an output (the experiment's ref, read from git)."""
    refs = run(project, "git", "for-each-ref", "--format=%(refname)", "refs/exps/").split()
    (ref,) = [ref for ref in refs if ref.endswith(f"/{experiment}")]
    lock = yaml.safe_load(run(project, "git", "show", f"{ref}:dvc.lock"))
    return next(out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", []) if out["path"] == path)


def test_a_clone_that_pulls_the_study_reads_the_same_numbers(project: Path, tmp_path: Path):
    """`dvc exp push` to a bare git repository and a folder DVC remote; a fresh clone `dvc exp pull`s the study."""
    origin, storage, clone = tmp_path / "origin.git", tmp_path / "dvc-storage", tmp_path / "clone"
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    run(project, "git", "remote", "add", "origin", str(origin))
    run(project, "git", "push", "-q", "origin", "main")
    run(project, "dvc", "remote", "add", "--local", "-d", "storage", str(storage))
    run(project, "dvc", "exp", "push", "origin")  # every experiment of HEAD: refs to git, outputs to the remote
    assert any(storage.rglob("*")), "dvc exp push sent no outputs to the DVC remote"

    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    run(clone, "dvc", "remote", "add", "--local", "-d", "storage", str(storage))
    run(clone, "dvc", "exp", "pull", "origin")
    here = compare(project, "--json", "here.json", "--plots", "study")
    there = compare(clone, "--json", "there.json", "--plots", "study")
    assert json.loads((clone / "there.json").read_text()) == json.loads((project / "here.json").read_text())
    assert there == here
    for name in ("forest.json", "curves_val_dice.csv", "curves_train_loss.csv", "images.csv"):
        assert (clone / "study" / name).read_bytes() == (project / "study" / name).read_bytes(), name

    # what the DVC remote adds: an experiment's checkpoints, for `dvc exp apply` and inference
    name = next(r["runs"][-1] for r in json.loads((clone / "there.json").read_text())["groups"])
    run(clone, "dvc", "exp", "apply", name)
    checkpoint = f"models/{MODEL_NAMES[0]}/best.pt"
    assert hashlib.md5((clone / checkpoint).read_bytes()).hexdigest() == lock_md5(project, name, checkpoint)
