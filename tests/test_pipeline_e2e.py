"""The whole DVC pipeline, run as a user would, in a temporary copy of the project.

Each test starts from what it reads, made by a fixture: the first ``dvc repro`` (run once per session
and copied to each module that needs it: tests/projectcopy.py), then, each in a copy of its own, an
evaluate-only change committed after the first run (for the params, metrics, plots and --against
commands) and an experiment (for ``dvc exp show`` and the README's tables). So any test, or any
selection of them (``-k``), runs alone. DVC's queue has a module (and project) of its own,
tests/test_queue_e2e.py, so the two run on different pytest-xdist workers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from petseg.evaluation import run as evaluation_run
from tests.paramsfile import REPO
from tests.projectcopy import GIT_USER, dvc_env, reproduced_project, run, stages_run

pytestmark = pytest.mark.slow  # the whole pipeline through dvc repro and exp run

STAGES = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])  # every stage, one train stage per model
METRIC_KEYS = set(evaluation_run.METRIC_KEYS)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, str]:
    """A copy of the tiny project (what a clone has, in a git repository) after its first dvc repro, committed."""
    return reproduced_project(tmp_path_factory, "e2e")


@pytest.fixture(scope="module")
def project(first_run: tuple[Path, str]) -> Path:
    return first_run[0]


def commit(project: Path, message: str) -> None:
    run(project, "git", "add", "-A")
    run(project, "git", *GIT_USER, "commit", "-qm", message)


@dataclass
class ThresholdChange:
    """A copy of the first run, then evaluate.threshold 0.4 reproduced and committed on top of it."""

    project: Path
    diff: str  # dvc params diff before the repro
    output: str  # the repro's
    checkpoints: dict[Path, int]  # each checkpoint's mtime before the repro


@pytest.fixture(scope="module")
def threshold_change(tmp_path_factory) -> ThresholdChange:
    project = reproduced_project(tmp_path_factory, "e2e-threshold")[0]
    checkpoints = {p: p.stat().st_mtime_ns for p in (project / "models").rglob("*.pt")}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["threshold"] = 0.4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    diff = run(project, "dvc", "params", "diff")
    output = run(project, "dvc", "repro")
    commit(project, "threshold 0.4")
    return ThresholdChange(project, diff, output, checkpoints)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> tuple[Path, str]:
    """A copy of the first run and an experiment on it, lr-small (train.lr 3e-4); and that dvc exp run's output."""
    project = reproduced_project(tmp_path_factory, "e2e-experiment")[0]
    return project, run(project, "dvc", "exp", "run", "-S", "train.lr=3e-4", "-n", "lr-small")


def test_repro_runs_every_stage_and_writes_every_output(first_run: tuple[Path, str]):
    project, output = first_run
    assert sorted(stages_run(output)) == sorted(STAGES)
    expected = [
        "data/raw/oxford-iiit-pet/annotations/trainval.txt",
        "data/cache/report.json",
        *[
            f"data/cache/{split}/{name}"
            for split in ("train", "val", "test")
            for name in ("images.npy", "masks.npy", "trimaps.npy", "names.txt")
        ],
        *[f"models/{model}/{which}.pt" for model in ("unet", "resnet34_unet") for which in ("best", "last")],
        *[f"dvclive/{model}/metrics.json" for model in ("unet", "resnet34_unet")],
        "dvclive/unet/plots/metrics/val/dice.tsv",
        "metrics/unet.json",
        "metrics/resnet34_unet.json",
        "metrics/compare.json",
        "plots/evaluate/unet.csv",
        "plots/evaluate/resnet34_unet.csv",
        "plots/evaluate/unet_by_breed.csv",
        "plots/evaluate/resnet34_unet_by_breed.csv",
        "plots/evaluate/unet_worst.npy",
        "plots/gallery/unet_worst.png",
        "plots/gallery/resnet34_unet_worst.png",
        "plots/dice_curves.png",
        "plots/loss_curves.png",
        "plots/lr_curves.png",
        "plots/dice_histogram.png",
        "plots/dice_by_breed.png",
    ]
    missing = [path for path in expected if not (project / path).is_file()]
    assert missing == []
    test_names = (project / "data/cache/test/names.txt").read_text().split()
    masks = sorted(p.name for p in (project / "predictions/unet").glob("*_mask.png"))
    assert masks == sorted(f"{name}_mask.png" for name in test_names)
    for model in ("unet", "resnet34_unet"):
        metrics = json.loads((project / f"metrics/{model}.json").read_text())
        assert set(metrics) == METRIC_KEYS and metrics["n_images"] == len(test_names)
        assert (
            metrics["dice_mean_cat"] is not None and metrics["dice_mean_dog"] is not None
        )  # synthetic lists label all
    assert json.loads((project / "metrics/compare.json").read_text())["n_images"] == len(test_names)
    assert run(project, "git", "status", "--porcelain") == ""  # the run is committed: outputs in git or in DVC


def test_second_repro_does_nothing(project: Path):
    output = run(project, "dvc", "repro")
    assert stages_run(output) == []
    assert "up to date" in run(project, "dvc", "status")


def test_evaluate_param_reruns_only_evaluate_and_what_follows(threshold_change: ThresholdChange):
    change, project = threshold_change, threshold_change.project
    assert re.search(r"evaluate\.threshold\s+0\.5\s+0\.4", change.diff), change.diff
    assert sorted(stages_run(change.output)) == ["compare", "evaluate", "plot"]
    assert {p: p.stat().st_mtime_ns for p in (project / "models").rglob("*.pt")} == change.checkpoints
    assert json.loads((project / "metrics/unet.json").read_text())["threshold"] == 0.4


def test_metrics_show_lists_both_models_and_diff_compares_commits(threshold_change: ThresholdChange):
    project = threshold_change.project
    shown = json.loads(run(project, "dvc", "metrics", "show", "--json"))
    data = next(iter(shown.values()))["data"]
    for model in ("unet", "resnet34_unet"):  # one file per model, the same keys: one row each in `dvc metrics show`
        assert set(data[f"metrics/{model}.json"]["data"]) == METRIC_KEYS
    assert {"dice_mean_diff", "ci95_low", "ci95_high", "p_value"} <= set(data["metrics/compare.json"]["data"])
    assert "dvclive/unet/metrics.json" in data
    diff = json.loads(run(project, "dvc", "metrics", "diff", "HEAD~1", "--json"))
    assert "metrics/unet.json" in diff


def test_compare_against_the_commit_before_an_evaluate_change(threshold_change: ThresholdChange):
    project = threshold_change.project
    done = subprocess.run(
        [sys.executable, "-m", "stages.compare", "--against", "HEAD~1"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=dvc_env(),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(",")[0] for line in lines if "dice_mean: here minus HEAD~1" in line] == ["UNet", "ResNet34-UNet"]
    measured = [line for line in lines if ": here minus HEAD~1 " in line]
    assert measured and all("95% CI [" in line and "Wilcoxon p = " in line for line in measured)
    assert all("one training run per side (training noise not included)" in line for line in measured)
    # only evaluate's params changed: dvc.lock's training entries are the same at both commits, and it says so
    assert "UNet: train_unet's code, params and data are identical here and at HEAD~1" in done.stdout
    assert "detectable" not in done.stdout


def test_plots_show_and_diff_render_both_models(threshold_change: ThresholdChange):
    project = threshold_change.project
    run(project, "dvc", "plots", "show", "-o", "plots_show")
    page = (project / "plots_show" / "index.html").read_text()
    for title in (
        "Validation Dice per epoch",
        "Train Dice per epoch",
        "Train (circles) and validation (squares) loss",
    ):
        assert title in page
    assert "<script src=" not in page and "vega-embed" in page  # the offline template of .dvc/config
    assert "plots/data/val_dice.csv" in page and "resnet34_unet_worst.png" in page
    assert "Mean test Dice by breed" in page and page.count("ResNet34-UNet") >= 6  # the models' own legend names
    run(project, "dvc", "plots", "diff", "HEAD~1", "-o", "plots_diff")
    diff_page = (project / "plots_diff" / "index.html").read_text()
    assert "HEAD~1" in diff_page and "workspace" in diff_page
    shutil.rmtree(project / "plots_show")
    shutil.rmtree(project / "plots_diff")


def test_experiment_run_with_set_param(experiment: tuple[Path, str]):
    project, output = experiment
    assert {"train_unet", "train_resnet", "evaluate"} <= set(stages_run(output))
    assert "download" not in stages_run(output)
    shown = run(project, "dvc", "exp", "show", "--no-pager", "--csv")
    assert "0.0003" in shown
    against = subprocess.run(
        [sys.executable, "-m", "stages.compare", "--against", "lr-small"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=dvc_env(),
    )
    assert against.returncode == 0 and "UNet, dice_mean: here minus lr-small +0.0000" in against.stdout, against.stderr


# The README's commands for "which model is better" and "compare my experiments", in a 120-column terminal
README_TABLES = {
    "which model is better": [
        "--drop",
        "dvclive|metrics/|models($|/)|plots/|boundary|n_images|dice_mean_diff|p_value|Created",
        "--keep",
        "(unet|resnet34_unet)_dice_mean|ci95_",
    ],
    "compare my experiments": [
        "--drop",
        "dvclive|metrics/|models($|/)|plots/|boundary|n_images|dice_mean_diff|ci95|p_value|Created",
        "--keep",
        "(unet|resnet34_unet)_dice_mean",
        "--sort-by",
        "unet_dice_mean",
    ],
}


@pytest.mark.parametrize("question", list(README_TABLES))
def test_readme_tables_fit_a_120_column_terminal(experiment: tuple[Path, str], question: str):
    project = experiment[0]
    readme = (REPO / "README.md").read_text()
    command = ["dvc", "exp", "show", "--no-pager", "--only-changed", *README_TABLES[question]]
    assert " ".join(command[:5]) + " --drop '" + README_TABLES[question][1] in readme  # the README shows this command
    done = subprocess.run(
        command, cwd=project, capture_output=True, text=True, timeout=300, env={**dvc_env(), "COLUMNS": "120"}
    )
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout and max(len(line) for line in done.stdout.splitlines()) <= 120, done.stdout
    assert "unet_dice_mean" in done.stdout and "resnet34_unet_dice_mean" in done.stdout and "train.lr" in done.stdout
    assert "lr-small" in done.stdout
