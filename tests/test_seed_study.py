"""benchmarks/seed_study.py: a seed study kept with its per-image tables recomputes as stages.compare computes it.

The quick tests record synthetic runs (no training) and check that ``report`` on the file prints and writes
what petseg.compare gives from the same runs built directly. The slow one queues two seeds in a copy of the
session's tiny project (tests/projectcopy.py) and checks that record -> report there gives the same
``--json`` and lines as ``python -m stages.compare --experiments``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from petseg.compare.run import compare_seeds
from petseg.compare.runs import Run, group_runs
from petseg.evaluation.tables import SCORES, PerImage
from tests.paramsfile import REPO
from tests.projectcopy import dvc_env, reproduced_project, run

SCRIPT = REPO / "benchmarks" / "seed_study.py"
MODELS = ("unet", "resnet34_unet")
sys.path.insert(0, str(SCRIPT.parent))  # the script imports its neighbour default_run, as benchmarks/ scripts do
import seed_study  # noqa: E402


def synthetic_runs(seeds: dict[float, list[int]], n_images: int = 30, seed: int = 7) -> list[Run]:
    """Runs of recipes differing in train.lr (``{lr: [seeds]}``): per-image scores of both models, made up."""
    rng = np.random.default_rng(seed)
    names = [f"img_{i:03d}" for i in range(n_images)]
    difficulty = rng.uniform(0.4, 0.9, n_images)
    runs = []
    for lr, run_seeds in seeds.items():
        for run_seed in run_seeds:
            tables = {}
            for shift, model in zip((0.02, 0.0), MODELS):
                base = difficulty + shift + rng.normal(0, 0.01) + rng.normal(0, 0.03, n_images)
                scores = {key: np.clip(base - 0.1 * k, 0.0, 1.0) for k, key in enumerate(SCORES)}
                tables[model] = PerImage(list(names), scores, ["Bengal"] * n_images, ["cat"] * n_images)
            params = {"train.lr": lr, "train.seed": run_seed, "data.image_size": 32}
            runs.append(Run(f"exp-{lr}-{run_seed}", params, tables, code="abcd1234"))
    return runs


def report_of(file: Path, tmp_path: Path, *extra: str) -> tuple[str, dict]:
    """``seed_study.py report FILE --json`` as a user runs it: its output and its --json."""
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "report", str(file), "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text())


@pytest.mark.parametrize(
    ("seeds", "by"),
    [({0.003: [42, 0, 1]}, None), ({0.003: [0, 1, 2], 0.001: [0, 1, 2]}, "train.lr")],
    ids=["one recipe", "by lr"],
)
def test_report_of_a_recorded_file_is_the_report_of_its_runs(tmp_path: Path, seeds, by):
    runs = synthetic_runs(seeds)
    file = tmp_path / "study.json"
    file.write_text(json.dumps(seed_study.study_record(runs, MODELS, by=by, note="synthetic")))
    printed, numbers = report_of(file, tmp_path)
    lines, expected = compare_seeds(MODELS, by=by, study=(runs, group_runs(runs, by)))
    assert printed.splitlines() == lines
    assert numbers == json.loads(json.dumps(expected))
    stored = json.loads(file.read_text())
    assert {k: stored[k] for k in ("groups", "differences", "by")} == numbers
    assert [r["seed"] for r in stored["runs"]] == [s for group in seeds.values() for s in group]
    assert stored["machine"]["cpu_capability"] and stored["machine"]["precision"]


def test_report_uses_the_stored_tables_not_the_stored_report(tmp_path: Path):
    """Change one run's stored Dice: the report follows the tables (the verdict recomputes from them)."""
    runs = synthetic_runs({0.003: [0, 1, 2]})
    study = seed_study.study_record(runs, MODELS)
    before = next(d for d in study["differences"] if d["metric"] == "dice_mean")
    study["runs"][0]["tables"]["unet"]["scores"]["dice"] = [0.0] * 30
    file = tmp_path / "study.json"
    file.write_text(json.dumps(study))
    _, numbers = report_of(file, tmp_path)
    after = next(d for d in numbers["differences"] if d["metric"] == "dice_mean")
    assert after["diff"] == pytest.approx(before["diff"] - np.mean(runs[0].tables["unet"].scores["dice"]) / 3)


def test_a_file_without_runs_is_one_line_naming_it(tmp_path: Path):
    file = tmp_path / "empty.json"
    file.write_text(json.dumps({"groups": [], "differences": []}))
    done = subprocess.run([sys.executable, str(SCRIPT), "report", str(file)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and str(file) in done.stderr


@pytest.mark.slow  # two queued seeds of the tiny project
def test_record_then_report_is_what_stages_compare_says(tmp_path_factory):
    project = reproduced_project(tmp_path_factory, "seedstudy")[0]
    run(project, "dvc", "exp", "run", "--queue", "-S", "train.seed=0,1")
    with open(project / "queue-start.log", "w") as log:  # a file, not a pipe: the workers keep its stdout
        started = subprocess.run(
            ["dvc", "queue", "start", "-j", "2"], cwd=project, stdout=log, stderr=subprocess.STDOUT, env=dvc_env()
        )
    assert started.returncode == 0, (project / "queue-start.log").read_text()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = run(project, "dvc", "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(8)
    run(project, "dvc", "queue", "stop", "--kill")
    assert status.count("Success") >= 2 and "Failed" not in status, status
    compared = subprocess.run(
        [sys.executable, "-m", "stages.compare", "--experiments", "--json", "compare.json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compared.returncode == 0, compared.stderr
    study = project / "study.json"
    run(project, sys.executable, "benchmarks/seed_study.py", "record", "--out", str(study), "--wall-seconds", "1")
    printed, numbers = report_of(study, project)
    assert printed == compared.stdout
    assert numbers == json.loads((project / "compare.json").read_text())
    stored = json.loads(study.read_text())
    assert sorted(r["seed"] for r in stored["runs"]) == [0, 1, 42] and stored["wall_seconds"] == 1.0
    assert len(stored["runs"][0]["tables"]["unet"]["names"]) == 12  # the tiny project's test images
