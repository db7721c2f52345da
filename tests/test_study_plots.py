"""A seed study's pictures (``python -m stages.compare --experiments --plots DIR``) carry the report's numbers.

Git repositories whose commit and experiments hold params.yaml, both models' per-image tables and their
DVCLive logs, as the tests write them; the stage script draws them; the checks recompute what the
pictures show from what the tests wrote, and compare the forest's rows with ``--json``'s differences.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ruamel.yaml import YAML

from petseg.evaluation.tables import PerImage, write_per_image_csv
from petseg.models import MODEL_NAMES, MODELS
from petseg.plotting.figures import model_styles
from petseg.plotting.forest import forest_rows, verdict_words
from tests.paramsfile import REPO
from tests.projectcopy import GIT_USER

SCRIPT = REPO / "stages" / "compare.py"
MODELS_DRAWN = list(MODEL_NAMES)  # every registered model (the tables are written for each)
N_IMAGES, EPOCHS = 40, 6
LOGGED = {"val_dice": ("val/dice", "dice"), "train_loss": ("train/loss", "loss")}
NUMBERS_KEYS = ("diff", "ci95_low", "ci95_high", "ci_adjusted_low", "ci_adjusted_high", "mde", "p_improvement")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_USER, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


class LoggedStudy:
    """A git repository of runs: params, every model's per-image table and DVCLive logs (what the tests wrote)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True)
        git(root, "init", "-q", "-b", "main")
        self.names = [f"breed_{i % 4}_{i:02d}" for i in range(N_IMAGES)]
        self.rng = np.random.default_rng(7)
        self.base = self.rng.uniform(0.5, 0.9, N_IMAGES)
        self.head = ""
        self.dice: dict[str, dict[str, np.ndarray]] = {}  # run label -> model -> per-image Dice
        self.logs: dict[str, dict[tuple[str, str], dict[int, float]]] = {}  # label -> (model, chart) -> epoch->value
        self.params: dict[str, dict[str, float]] = {}

    def _write(self, label: str, seed: int, lr: float, shift: float, epochs: int, logged: bool) -> None:
        yaml = YAML()
        values = yaml.load((REPO / "params.yaml").read_text())
        values["train"]["seed"], values["train"]["lr"] = seed, lr
        with open(self.root / "params.yaml", "w") as handle:
            yaml.dump(values, handle)
        self.dice[label], self.logs[label] = {}, {}
        self.params[label] = {"seed": seed, "lr": lr}
        shutil.rmtree(self.root / "dvclive", ignore_errors=True)
        for k, model in enumerate(MODELS_DRAWN):
            dice = np.clip(self.base + shift - 0.03 * k + self.rng.normal(0, 0.03, N_IMAGES), 0, 1)
            scores = {"dice": dice, "iou": dice / (2 - dice), "dice_ignore_border": dice, "boundary_iou": dice * 0.5}
            nothing = [None] * N_IMAGES
            write_per_image_csv(
                self.root / "plots" / "evaluate" / f"{model}.csv", PerImage(self.names, scores, nothing, nothing)
            )
            self.dice[label][model] = dice
            if not logged:
                continue
            for chart, (metric, column) in LOGGED.items():
                log = {e: float(0.5 + 0.04 * e + shift + self.rng.normal(0, 0.01)) for e in range(1, epochs + 1)}
                if chart == "train_loss":
                    log = {e: float(0.9 / e + self.rng.normal(0, 0.01)) for e in log}
                path = self.root / "dvclive" / model / "plots" / "metrics" / f"{metric}.tsv"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"step\t{column}\n" + "".join(f"{e}\t{v!r}\n" for e, v in log.items()))
                self.logs[label][(model, chart)] = log

    def commit(self, seed: int, lr: float, shift: float, epochs: int = EPOCHS) -> None:
        self._write("HEAD", seed, lr, shift, epochs, True)
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", "baseline")
        self.head = git(self.root, "rev-parse", "HEAD").strip()

    def experiment(self, name: str, seed: int, lr: float, shift: float, epochs: int = EPOCHS, logged=True) -> None:
        """An experiment as DVC stores it: a commit on top of HEAD under refs/exps/<sha[:2]>/<sha[2:]>/<name>."""
        self._write(name, seed, lr, shift, epochs, logged)
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", name)
        sha = git(self.root, "rev-parse", "HEAD").strip()
        git(self.root, "update-ref", f"refs/exps/{self.head[:2]}/{self.head[2:]}/{name}", sha)
        git(self.root, "reset", "-q", "--hard", self.head)

    def compare(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args], cwd=self.root, capture_output=True, text=True, timeout=300
        )


def two_recipes(root: Path) -> LoggedStudy:
    """Two learning rates x three seeds; one run of the second recipe logged only 5 of the 6 epochs."""
    study = LoggedStudy(root)
    study.commit(42, 0.003, 0.0)
    study.experiment("s0", 0, 0.003, 0.01)
    study.experiment("s1", 1, 0.003, -0.01)
    study.experiment("low-0", 0, 0.001, -0.04)
    study.experiment("low-1", 1, 0.001, -0.05, epochs=EPOCHS - 1)
    study.experiment("low-2", 2, 0.001, -0.03)
    return study


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def colour_pixels(path: Path, colour: str) -> int:
    rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return int(np.all(np.asarray(Image.open(path).convert("RGB")) == rgb, axis=-1).sum())


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> tuple[LoggedStudy, dict, Path, str]:
    """The two-recipe study, drawn with --plots and reported with --json."""
    study = two_recipes(tmp_path_factory.mktemp("study") / "project")
    done = study.compare("--experiments", "--by", "train.lr", "--plots", "study", "--json", "study.json")
    assert done.returncode == 0, done.stderr
    return study, json.loads((study.root / "study.json").read_text()), study.root / "study", done.stdout


def test_forest_rows_are_the_reports_differences(drawn) -> None:
    study, report, out, _ = drawn
    rows = json.loads((out / "forest.json").read_text())
    n_models = len(MODELS_DRAWN)
    assert len(rows) == len(report["differences"]) == 2 * (n_models - 1) * 2 + n_models * 2  # within, between
    for row, record in zip(rows, report["differences"]):
        for key, value in record.items():  # every key of the report, as it is (the adjusted interval and MDE too)
            assert row[key] == value, key
        assert all(row.get(key) == record.get(key) for key in NUMBERS_KEYS)
        assert row["numbers"].startswith(
            f"{record['diff']:+.4f} [{record['ci95_low']:+.4f}, {record['ci95_high']:+.4f}]"
        )
    orders = sorted(row["order"] for row in rows)
    assert orders == list(range(len(rows)))


def test_bands_are_the_mean_min_and_max_of_the_logs_per_epoch(drawn) -> None:
    study, report, out, _ = drawn
    groups = {g["name"]: g["runs"] for g in report["groups"]}
    assert set(groups) == {"train.lr=0.003", "train.lr=0.001"}
    labels = {info.label: name for name, info in MODELS.items()}
    for chart in LOGGED:
        rows = read_csv(out / f"curves_{chart}.csv")
        seen = set()
        for row in rows:
            group = row["recipe"].rsplit(" (", 1)[0]
            model, epoch = labels[row["model"]], int(row["epoch"])
            values = [
                study.logs[run][(model, chart)][epoch]
                for run in groups[group]
                if epoch in study.logs[run][(model, chart)]
            ]
            assert float(row["mean"]) == pytest.approx(statistics.fmean(values), abs=1e-12)
            assert (float(row["low"]), float(row["high"])) == (min(values), max(values))
            assert float(row["sd"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
            assert int(row["n_seeds"]) == len(values) and row["recipe"] == f"{group} (3 seeds)"
            assert row["colour"] == MODELS[model].colour
            seen.add((group, model, epoch))
        assert len(seen) == len(rows) == 2 * len(MODELS_DRAWN) * EPOCHS
    last = [
        r
        for r in read_csv(out / "curves_val_dice.csv")
        if r["recipe"].startswith("train.lr=0.001") and r["epoch"] == str(EPOCHS)
    ]
    assert {r["n_seeds"] for r in last} == {"2"}  # one run of that recipe logged 5 epochs


def test_images_are_averaged_over_the_first_recipes_seeds(drawn) -> None:
    study, report, out, stdout = drawn
    first = report["groups"][0]
    rows = read_csv(out / "images.csv")
    a, *others = MODELS_DRAWN
    assert [r["pair"] for r in rows][::N_IMAGES] == [f"{MODELS[a].label} (y) vs {MODELS[b].label} (x)" for b in others]
    headline = rows[:N_IMAGES]
    a_mean = np.mean([study.dice[run][a] for run in first["runs"]], axis=0)
    b_mean = np.mean([study.dice[run][others[0]] for run in first["runs"]], axis=0)
    assert [r["image"] for r in headline] == study.names
    assert np.allclose([float(r["a_dice"]) for r in headline], a_mean, atol=1e-12)
    assert np.allclose([float(r["b_dice"]) for r in headline], b_mean, atol=1e-12)
    record = report["differences"][0]
    assert (record["a"], record["b"], record["metric"], record["group"]) == (a, others[0], "dice_mean", first["name"])
    assert np.mean(a_mean - b_mean) == pytest.approx(record["diff"], abs=1e-12)  # the headline difference
    disagreement = np.argsort(-np.abs(a_mean - b_mean), kind="stable")[:5]
    assert {r["named"] for r in headline} - {""} == {study.names[i] for i in disagreement}
    assert all(r["n_seeds"] == "3" for r in rows)


def test_pngs_draw_every_model_in_its_registry_colour(drawn) -> None:
    _, _, out, stdout = drawn
    for name in ("curves.png", "forest.png", "images.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 500 and image.size[1] > 400, name
        for model in MODELS_DRAWN:
            assert colour_pixels(out / name, MODELS[model].colour) > 50, (name, model)
    assert "dvc plots show study/val_dice study/train_loss study/forest study/images -o study/page" in stdout


def test_dvc_plots_show_renders_every_chart_offline(drawn) -> None:
    study, report, out, _ = drawn
    offline = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=study.root, check=True, env=offline)
    for name in ("config", "plots_template.html"):
        shutil.copy(REPO / ".dvc" / name, study.root / ".dvc" / name)
    ids = ["study/val_dice", "study/train_loss", "study/forest", "study/images"]
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", *ids, "--json"],
        cwd=study.root, capture_output=True, text=True, timeout=300, env=offline,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert not data.get("errors") and sorted(data["data"]) == sorted(ids)
    forest = data["data"]["study/forest"][0]["content"]
    assert [row["diff"] for row in forest["data"]["values"]] == [d["diff"] for d in report["differences"]]
    assert len(data["data"]["study/images"][0]["content"]["data"]["values"]) == N_IMAGES * (len(MODELS_DRAWN) - 1)
    page = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", *ids, "-o", "study/page"],
        cwd=study.root, capture_output=True, text=True, timeout=300, env=offline,
    )  # fmt: skip
    assert page.returncode == 0, page.stderr
    html = (out / "page" / "index.html").read_text()
    assert "petseg's HTML template" in html and "vegaEmbed" in html  # the project's offline template
    for title in (
        "Validation Dice per epoch",
        "Training loss per epoch",
        "Differences over seeds",
        "Per-image test Dice",
    ):
        assert title in html, title


def test_a_run_without_logs_is_left_out_of_the_band_and_said(tmp_path: Path) -> None:
    study = LoggedStudy(tmp_path / "project")
    study.commit(42, 0.003, 0.0)
    study.experiment("s0", 0, 0.003, 0.01)
    study.experiment("unlogged", 1, 0.003, 0.0, logged=False)
    done = study.compare("--experiments", "--plots", "out")
    assert done.returncode == 0, done.stderr
    assert (
        f"note: all runs, {MODELS_DRAWN[0]}: no DVCLive log of val/dice in unlogged (2 of 3 seeds in its band)"
        in done.stdout
    )
    rows = read_csv(study.root / "out" / "curves_val_dice.csv")
    assert {r["recipe"] for r in rows} == {"all runs (2 seeds)"}
    assert {r["n_seeds"] for r in read_csv(study.root / "out" / "images.csv")} == {"3"}  # the tables: every seed


def test_a_broken_log_is_a_one_line_error_naming_the_file_and_run(tmp_path: Path) -> None:
    study = LoggedStudy(tmp_path / "project")
    study.commit(42, 0.003, 0.0)
    log = study.root / "dvclive" / MODELS_DRAWN[0] / "plots" / "metrics" / "val" / "dice.tsv"
    log.write_text("step\tdice\n1\tx\n")
    git(study.root, "commit", "-qam", "a broken log")
    done = study.compare("--experiments", "--plots", "out")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: dvclive/{MODELS_DRAWN[0]}/plots/metrics/val/dice.tsv at HEAD: not a DVCLive")


def test_plots_go_with_experiments(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--plots", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)  # fmt: skip
    assert done.returncode == 2 and "--plots and --rev go with --experiments" in done.stderr


def test_forest_rows_keep_every_key_of_the_report_and_fill_the_missing() -> None:
    styles = model_styles(MODELS_DRAWN)
    a, b = MODELS_DRAWN[:2]
    older = {"metric": "dice_mean", "a": a, "b": b, "model": None, "group": "all runs", "diff": 0.03,
             "ci95_low": 0.01, "ci95_high": 0.05, "n_seeds_a": 3, "n_seeds_b": 3, "includes_training_noise": True,
             "detectable": True}  # fmt: skip
    newer = {**older, "metric": "boundary_iou_mean", "mde": 0.02, "ci_adjusted_low": 0.0, "ci_adjusted_high": 0.06,
             "verdict": "no detectable difference; this study detects differences of 0.020 or more",
             "detectable": False}  # fmt: skip
    rows = forest_rows([older, newer], styles)
    assert set(rows[0]) == set(rows[1])  # DVC reads rows of equal keys only
    assert rows[0]["mde"] is None and rows[1]["mde"] == 0.02 and rows[1]["ci_adjusted_high"] == 0.06
    assert rows[0]["verdict_words"] == "detectable" and rows[1]["verdict_words"] == newer["verdict"]
    assert rows[1]["numbers"] == "+0.0300 [+0.0100, +0.0500], adjusted [+0.0000, +0.0600], MDE 0.0200; 3 vs 3 seeds"
    assert rows[0]["row"] == f"{MODELS[a].label} \u2212 {MODELS[b].label}" and rows[0]["colour"] == MODELS[b].colour
    between = {**older, "model": a, "a": "train.lr=0.001", "b": "train.lr=0.003", "group": None}
    (row,) = forest_rows([between], styles)
    assert (
        row["row"] == f"{MODELS[a].label}: train.lr=0.001 \u2212 train.lr=0.003" and row["colour"] == MODELS[a].colour
    )
    one_seed = {**older, "n_seeds_a": 1, "includes_training_noise": False, "detectable": False}
    assert "not training noise" in verdict_words(one_seed)
