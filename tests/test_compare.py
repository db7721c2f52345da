"""Comparisons with intervals: the statistics, the compare stage, and --against other commits and experiments."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petseg.compare.stats import paired_difference
from petseg.evaluation.tables import PerImage, write_per_image_csv
from tests.paramsfile import REPO
from tests.projectcopy import GIT_USER

SCRIPT = REPO / "stages" / "compare.py"


def independent_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = 20_000, seed: int = 123
) -> tuple[float, float]:
    """A plain paired percentile bootstrap: resample images with replacement, keep each pair together."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    means = (a[picks] - b[picks]).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def exact_wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided exact p-value of the signed-rank statistic by enumerating every sign pattern (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(differences))) + 1
    observed = ranks[differences > 0].sum()
    total = ranks.sum()
    stats = np.array(
        [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(ranks))]
    )
    low = min(observed, total - observed)
    return float(min(1.0, 2 * np.mean(stats <= low)))


def test_interval_agrees_with_an_independent_paired_bootstrap() -> None:
    rng = np.random.default_rng(7)
    b = rng.uniform(0.5, 0.95, 300)
    a = np.clip(b + 0.01 + rng.normal(0, 0.04, 300), 0, 1)
    found = paired_difference(a, b)
    low, high = independent_bootstrap(a, b)
    assert found.diff == pytest.approx(float(np.mean(a - b)), abs=1e-15)
    assert found.low == pytest.approx(low, abs=0.0015) and found.high == pytest.approx(high, abs=0.0015)
    assert found.n == 300 and found.detectable
    assert paired_difference(a, b) == found  # seeded: the same interval every time


def test_p_value_is_the_exact_signed_rank_test() -> None:
    differences = np.array([0.031, -0.004, 0.012, 0.027, -0.009, 0.018, 0.022, 0.006, 0.015, -0.001])
    b = np.linspace(0.6, 0.8, len(differences))
    found = paired_difference(b + differences, b)
    assert found.p_value == pytest.approx(exact_wilcoxon_p(differences), rel=1e-9)
    same = paired_difference(b, b)
    assert (same.diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0) and not same.detectable


def table(names: list[str], dice: np.ndarray, boundary: np.ndarray | None = None) -> PerImage:
    boundary = dice * 0.8 if boundary is None else boundary
    scores = {
        "dice": dice,
        "iou": dice / (2 - dice),
        "dice_ignore_border": np.minimum(dice + 0.01, 1),
        "boundary_iou": boundary,
    }
    return PerImage(names, scores, ["Abyssinian"] * len(names), ["cat"] * len(names))


def run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=repo, capture_output=True, text=True, timeout=120)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose last commit holds both models' per-image tables (40 test images)."""
    root = tmp_path / "project"
    (root / "plots" / "evaluate").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    rng = np.random.default_rng(0)
    names = [f"img_{i:02d}" for i in range(40)]
    for model, level in (("unet", 0.80), ("resnet34_unet", 0.78)):
        write_per_image_csv(
            root / "plots" / "evaluate" / f"{model}.csv", table(names, rng.uniform(level - 0.1, level + 0.1, 40))
        )
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", *GIT_USER, "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", *GIT_USER, "commit", "-qm", "evaluated"], cwd=root, check=True)
    return root


def rewrite(repo: Path, model: str, change) -> PerImage:
    from petseg.evaluation.tables import read_per_image_csv

    path = repo / "plots" / "evaluate" / f"{model}.csv"
    old = read_per_image_csv(path)
    new = change(old)
    write_per_image_csv(path, new)
    return old


def test_compare_stage_writes_the_paired_difference_of_the_models(repo: Path) -> None:
    done = run(repo)
    assert done.returncode == 0, done.stderr
    report = json.loads((repo / "metrics" / "compare.json").read_text())
    assert list(report) == [
        "unet_dice_mean",
        "resnet34_unet_dice_mean",
        "dice_mean_diff",
        "ci95_low",
        "ci95_high",
        "p_value",
        "n_images",
        "boundary_iou_mean_diff",
        "boundary_iou_ci95_low",
        "boundary_iou_ci95_high",
        "boundary_iou_p_value",
    ]
    from petseg.evaluation.tables import read_per_image_csv

    unet = read_per_image_csv(repo / "plots" / "evaluate" / "unet.csv")
    resnet = read_per_image_csv(repo / "plots" / "evaluate" / "resnet34_unet.csv")
    assert report["dice_mean_diff"] == pytest.approx(np.mean(unet.scores["dice"] - resnet.scores["dice"]), abs=1e-12)
    assert report["unet_dice_mean"] == np.mean(unet.scores["dice"])
    assert report["ci95_low"] < report["dice_mean_diff"] < report["ci95_high"] and report["n_images"] == 40
    assert 0 < report["p_value"] <= 1 and "UNet minus ResNet34-UNet" in done.stderr


def test_against_a_commit_reports_each_model_with_its_interval(repo: Path) -> None:
    rng = np.random.default_rng(1)
    rewrite(repo, "unet", lambda t: table(t.names, np.clip(t.scores["dice"] + 0.05 + rng.normal(0, 0.01, 40), 0, 1)))
    done = run(repo, "--against", "HEAD")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    unet = next(line for line in lines if line.startswith("UNet, dice_mean"))
    resnet = next(line for line in lines if line.startswith("ResNet34-UNet, dice_mean"))
    assert "here minus HEAD +0.05" in unet and "(40 images)" in unet and "+0.0000" in resnet
    # one run per side: the interval covers the test images, and says so instead of calling anything detectable
    assert all("one training run per side (training noise not included)" in line for line in (unet, resnet))
    assert "detectable" not in done.stdout


def test_against_an_experiment_by_name(repo: Path) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    rewrite(repo, "resnet34_unet", lambda t: table(t.names, np.clip(t.scores["dice"] - 0.1, 0, 1)))
    subprocess.run(["git", *GIT_USER, "commit", "-qam", "worse resnet"], cwd=repo, check=True)
    worse = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/lucky-seed", worse], cwd=repo, check=True)
    subprocess.run(["git", "reset", "-q", "--hard", head], cwd=repo, check=True)
    done = run(repo, "--against", "lucky-seed")
    assert done.returncode == 0, done.stderr
    resnet = next(line for line in done.stdout.splitlines() if line.startswith("ResNet34-UNet, dice_mean"))
    assert "here minus lucky-seed +0.1" in resnet


def test_missing_tables_and_unknown_revisions_are_one_line_errors(repo: Path) -> None:
    (repo / "plots" / "evaluate" / "extra.csv").write_text("x\n")
    subprocess.run(["git", "rm", "-q", "--cached", "plots/evaluate/resnet34_unet.csv"], cwd=repo, check=True)
    subprocess.run(["git", *GIT_USER, "commit", "-qm", "no resnet table"], cwd=repo, check=True)
    for rev, complaint in (
        ("HEAD", "plots/evaluate/resnet34_unet.csv: not found at HEAD"),
        ("no-such-rev", "'no-such-rev' is neither a git revision nor a DVC experiment"),
    ):
        done = run(repo, "--against", rev)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {complaint}"), done.stderr


def test_different_test_images_compare_the_shared_ones_or_refuse(repo: Path) -> None:
    old = rewrite(repo, "unet", lambda t: table(t.names[5:] + ["new_1"], np.append(t.scores["dice"][5:], 0.5)))
    rewrite(repo, "resnet34_unet", lambda t: table(t.names[5:] + ["new_1"], np.append(t.scores["dice"][5:], 0.5)))
    done = run(repo, "--against", "HEAD")
    assert done.returncode == 1
    assert (
        "note: unet: the test images differ from HEAD's (36 here, 40 there): comparing the 35 images both have"
        in done.stdout
    )
    assert "(35 images)" in done.stdout and "+0.0000" in done.stdout
    rewrite(repo, "unet", lambda t: table([f"other_{i}" for i in range(30)] + old.names[:9], np.full(39, 0.7)))
    done = run(repo, "--against", "HEAD")
    assert done.returncode == 1 and done.stdout == ""
    assert (
        done.stderr.strip()
        == "error: unet: the test images here and at HEAD share only 9 image(s) (at least 10 are needed to compare)"
    )


def test_table_puts_the_models_side_by_side_within_120_columns(repo: Path) -> None:
    keys = {
        "dice_mean": 0.71,
        "dice_median": 0.72,
        "iou_mean": 0.55,
        "boundary_iou_mean": 0.15,
        "n_images": 40,
        "tta": False,
        "parameters": 39033601,
        "train_seconds_per_epoch": 22.58,
    }
    (repo / "metrics").mkdir()
    for model, shift in (("unet", 0.0), ("resnet34_unet", -0.02)):
        values = {k: v + shift if isinstance(v, float) else v for k, v in keys.items()}
        (repo / "metrics" / f"{model}.json").write_text(json.dumps(values))
    subprocess.run(["git", *GIT_USER, "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *GIT_USER, "commit", "-qm", "metrics"], cwd=repo, check=True)
    (repo / "metrics" / "unet.json").write_text(json.dumps({**keys, "dice_mean": 0.75}))
    done = run(repo, "--table", "--against", "HEAD")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["metric", "UNet", "UNet", "@", "HEAD", "ResNet34-UNet", "ResNet34-UNet", "@", "HEAD"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert list(rows) == list(keys)  # a metric per row, in the file's order
    assert rows["dice_mean"] == ["0.7500", "0.7100", "0.6900", "0.6900"]
    assert rows["n_images"] == ["40"] * 4 and rows["tta"] == ["false"] * 4
    assert max(len(line) for line in lines) <= 120
