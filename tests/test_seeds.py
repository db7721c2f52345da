"""Seed studies: intervals over seeds and test images, grouping by recipe, and the --experiments report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML
from scipy import stats

from petseg.compare.stats import paired_difference, seed_difference
from petseg.evaluation.tables import PerImage, write_per_image_csv
from tests.paramsfile import REPO
from tests.projectcopy import GIT_USER

SCRIPT = REPO / "stages" / "compare.py"
N_IMAGES = 60


def two_level_bootstrap(a: np.ndarray, b: np.ndarray, same_runs: bool, resamples: int = 6000, seed: int = 99):
    """A plain loop: draw each side's runs with replacement, then one set of images for all runs; percentiles."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        runs_a = rng.choice(a.shape[0], a.shape[0])
        runs_b = runs_a if same_runs else rng.choice(b.shape[0], b.shape[0])
        images = rng.choice(a.shape[1], a.shape[1])
        values.append(a[runs_a][:, images].mean() - b[runs_b][:, images].mean())
    return np.percentile(values, 2.5), np.percentile(values, 97.5)


def runs_of(rng: np.random.Generator, base: np.ndarray, shift: float, seed_sd: float, n_runs: int) -> np.ndarray:
    """Per-image scores of ``n_runs`` training runs: the images' difficulty, a per-run offset, per-image noise."""
    offsets = rng.normal(shift, seed_sd, size=(n_runs, 1))
    return np.clip(base + offsets + rng.normal(0, 0.02, size=(n_runs, len(base))), 0, 1)


def test_within_a_recipe_the_variance_is_the_crossed_random_effects_one() -> None:
    """Runs x images crossed, both random: Var(grand mean) = (MS_runs + MS_images - MS_residual) / (R N)."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.5, 0.9, N_IMAGES)
    a = runs_of(rng, base + rng.normal(0, 0.05, N_IMAGES), 0.01, 0.02, 4)
    b = runs_of(rng, base, 0.0, 0.02, 4)
    c, (runs, images) = a - b, (a - b).shape
    grand = c.mean()
    ms_runs = images * sum((row.mean() - grand) ** 2 for row in c) / (runs - 1)
    ms_images = runs * sum((column.mean() - grand) ** 2 for column in c.T) / (images - 1)
    residual = sum(
        (c[r, i] - c[r].mean() - c[:, i].mean() + grand) ** 2 for r in range(runs) for i in range(images)
    ) / ((runs - 1) * (images - 1))
    found = seed_difference(a, b, same_runs=True)
    assert ms_images > residual  # an image effect: all three mean squares enter
    assert found.se**2 == pytest.approx((ms_runs + ms_images - residual) / (runs * images), rel=1e-9)
    assert found.diff == pytest.approx(grand, abs=1e-12) and found.low < found.diff < found.high
    assert (found.n_seeds_a, found.n_seeds_b, found.n_images) == (4, 4, N_IMAGES) and found.includes_training_noise


def test_without_image_noise_the_intervals_are_the_t_tests_on_run_means() -> None:
    """Runs that shift every image alike: the paired t-interval within a recipe, Welch's between recipes."""
    rng = np.random.default_rng(4)
    base = rng.uniform(0.5, 0.9, N_IMAGES)
    a = base + np.array([0.030, 0.010, 0.022, 0.041])[:, None]
    b = base + np.array([0.000, 0.012, -0.010, 0.020])[:, None]
    paired = stats.ttest_rel(a.mean(axis=1), b.mean(axis=1)).confidence_interval()
    found = seed_difference(a, b, same_runs=True)
    assert (found.low, found.high) == pytest.approx((paired.low, paired.high), abs=1e-9)
    welch = stats.ttest_ind(a.mean(axis=1), b[:3].mean(axis=1), equal_var=False).confidence_interval()
    found = seed_difference(a, b[:3])
    assert (found.low, found.high) == pytest.approx((welch.low, welch.high), abs=1e-9)


def test_training_noise_widens_what_one_run_calls_clear() -> None:
    """Per-run offsets (training noise) of a few hundredths, the same on average for both recipes: the first pair
    of runs differs by +0.05, which one run's paired interval calls clear; the seed-level interval contains 0."""
    rng = np.random.default_rng(11)
    base = rng.uniform(0.5, 0.9, N_IMAGES)
    offsets_a = np.array([0.05, -0.04, 0.03, -0.03, 0.0])[:, None]
    offsets_b = np.array([0.0, 0.02, -0.02, 0.03, -0.02])[:, None]
    a = np.clip(base + offsets_a + rng.normal(0, 0.01, (5, N_IMAGES)), 0, 1)
    b = np.clip(base + offsets_b + rng.normal(0, 0.01, (5, N_IMAGES)), 0, 1)
    single = paired_difference(a[0], b[0])
    assert single.detectable and single.low > 0.04  # what the images-only interval says of one pair of runs
    over_seeds = seed_difference(a, b)
    assert over_seeds.low < 0 < over_seeds.high and not over_seeds.detectable
    low, high = two_level_bootstrap(a, b, False)
    assert low < 0 < high  # the independent computation agrees that 0 is inside


def test_a_real_difference_survives_both_intervals() -> None:
    rng = np.random.default_rng(12)
    base = rng.uniform(0.5, 0.9, N_IMAGES)
    a, b = runs_of(rng, base, 0.10, 0.01, 3), runs_of(rng, base, 0.0, 0.01, 3)
    assert paired_difference(a[0], b[0]).detectable
    over_seeds = seed_difference(a, b)
    assert over_seeds.detectable and over_seeds.low > 0.05
    assert two_level_bootstrap(a, b, False)[0] > 0.05


def test_one_seed_a_side_is_never_detectable() -> None:
    rng = np.random.default_rng(13)
    base = rng.uniform(0.5, 0.9, N_IMAGES)
    one = seed_difference(runs_of(rng, base, 0.2, 0.01, 1), runs_of(rng, base, 0.0, 0.01, 3))
    assert one.excludes_zero and not one.includes_training_noise and not one.detectable


def test_code_recorded_in_dvc_lock_is_part_of_the_recipe() -> None:
    from petseg.compare.runs import Run, code_hashes, group_runs

    def lock(md5: str) -> str:
        return (
            "schema: '2.0'\nstages:\n  evaluate:\n    cmd: python -m stages.evaluate\n    deps:\n"
            f"    - path: petseg/evaluation\n      md5: {md5}\n"
            f"    - path: models/unet/best.pt\n      md5: {md5[::-1]}\n"
        )

    assert code_hashes(lock("aa11")) != code_hashes(lock("bb22")) and code_hashes(None) == ""
    params = {"train.seed": 0, "train.lr": 0.003}
    runs = [
        Run("a", params, {}, code=code_hashes(lock("aa11"))),
        Run("b", {**params, "train.seed": 1}, {}, code=code_hashes(lock("aa11"))),
        Run("c", params, {}, code=code_hashes(lock("bb22"))),
    ]
    groups = group_runs(runs)
    assert [[run.label for run in group.runs] for group in groups] == [["a", "b"], ["c"]]
    assert groups[0].name.startswith("code ") and groups[0].name != groups[1].name


# --- the --experiments report, on git repositories whose runs the tests write ---------------------------------------


def table(names: list[str], dice: np.ndarray) -> PerImage:
    scores = {"dice": dice, "iou": dice / (2 - dice), "dice_ignore_border": dice, "boundary_iou": dice * 0.5}
    return PerImage(names, scores, [None] * len(names), [None] * len(names))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_USER, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


class Study:
    """A git repository whose commit and experiments hold params.yaml and both models' per-image tables."""

    def __init__(self, root: Path):
        self.root = root
        (root / "plots" / "evaluate").mkdir(parents=True)
        shutil.copy(REPO / "params.yaml", root / "params.yaml")
        self.names = [f"img_{i:02d}" for i in range(N_IMAGES)]
        git(root, "init", "-q", "-b", "main")
        self.head = ""

    def write(self, unet: np.ndarray, resnet: np.ndarray, names: list[str] | None = None, **params) -> None:
        yaml = YAML()
        values = yaml.load((REPO / "params.yaml").read_text())
        for key, value in params.items():
            section, name = key.rsplit("__", 1) if "__" in key else ("train", key)
            target = values
            for part in section.split("."):
                target = target[part]
            target[name] = value
        with open(self.root / "params.yaml", "w") as out:
            yaml.dump(values, out)
        for model, dice in (("unet", unet), ("resnet34_unet", resnet)):
            write_per_image_csv(self.root / "plots" / "evaluate" / f"{model}.csv", table(names or self.names, dice))

    def commit(self, unet: np.ndarray, resnet: np.ndarray, **params) -> None:
        self.write(unet, resnet, **params)
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", "baseline")
        self.head = git(self.root, "rev-parse", "HEAD").strip()

    def experiment(self, name: str, unet: np.ndarray, resnet: np.ndarray, names=None, **params) -> None:
        """An experiment as DVC stores it: a commit on top of HEAD under refs/exps/<sha[:2]>/<sha[2:]>/<name>."""
        self.write(unet, resnet, names, **params)
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", name)
        sha = git(self.root, "rev-parse", "HEAD").strip()
        git(self.root, "update-ref", f"refs/exps/{self.head[:2]}/{self.head[2:]}/{name}", sha)
        git(self.root, "reset", "-q", "--hard", self.head)

    def compare(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args], cwd=self.root, capture_output=True, text=True, timeout=120
        )


@pytest.fixture
def study(tmp_path: Path) -> Study:
    return Study(tmp_path / "project")


def scores(rng: np.random.Generator, level: float) -> np.ndarray:
    return np.clip(rng.uniform(level - 0.1, level + 0.1, N_IMAGES), 0, 1)


def test_experiments_group_by_everything_but_the_seed(study: Study, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    runs = {42: (0.80, 0.70), 0: (0.82, 0.69), 1: (0.78, 0.72)}
    study.commit(scores(rng, runs[42][0]), scores(rng, runs[42][1]), seed=42)
    for seed in (0, 1):
        study.experiment(f"seed-{seed}", scores(rng, runs[seed][0]), scores(rng, runs[seed][1]), seed=seed)
    study.experiment("other-data", scores(rng, 0.5), scores(rng, 0.5), seed=0, **{"data__seed": 5})
    done = study.compare("--experiments", "--json", str(tmp_path / "study.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "study.json").read_text())
    groups = {group["name"]: group for group in report["groups"]}
    assert sorted(groups) == ["data.seed=0", "data.seed=5"]  # data.seed is a recipe change; train.seed is not
    main = groups["data.seed=0"]
    assert main["seeds"] == [42, 0, 1] and main["runs"] == ["HEAD", "seed-0", "seed-1"]
    assert groups["data.seed=5"]["seeds"] == [0]
    # the group's mean and sd over seeds, recomputed from the tables the test wrote
    from petseg.evaluation.tables import read_per_image_csv

    per_run = []
    for rev in ("HEAD", "seed-0", "seed-1"):
        sha = (
            study.head
            if rev == "HEAD"
            else git(study.root, "rev-parse", f"refs/exps/{study.head[:2]}/{study.head[2:]}/{rev}")
        )
        text = git(study.root, "show", f"{sha.strip()}:plots/evaluate/unet.csv")
        (tmp_path / "t.csv").write_text(text)
        per_run.append(read_per_image_csv(tmp_path / "t.csv").scores["dice"].mean())
    unet = main["models"]["unet"]["dice_mean"]
    assert unet["mean"] == pytest.approx(np.mean(per_run), abs=1e-12)
    assert unet["sd"] == pytest.approx(np.std(per_run, ddof=1), abs=1e-12) and unet["n_seeds"] == 3
    within = [d for d in report["differences"] if d["group"] == "data.seed=0" and d["metric"] == "dice_mean"]
    assert len(within) == 1 and (within[0]["a"], within[0]["b"], within[0]["model"]) == ("unet", "resnet34_unet", None)
    assert within[0]["n_seeds_a"] == within[0]["n_seeds_b"] == 3 and within[0]["n_images"] == N_IMAGES
    lonely = [d for d in report["differences"] if d["group"] == "data.seed=5"]
    assert all(not d["includes_training_noise"] and not d["detectable"] for d in lonely)
    assert "one seed a side: the interval covers test images only, not training noise" in done.stdout
    assert "compare them with --by KEY" in done.stdout


def test_by_key_gives_each_models_difference_between_recipes(study: Study, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    study.commit(scores(rng, 0.70), scores(rng, 0.70), seed=0, lr=0.003)
    study.experiment("s1", scores(rng, 0.71), scores(rng, 0.70), seed=1, lr=0.003)
    study.experiment("low-0", scores(rng, 0.85), scores(rng, 0.60), seed=0, lr=0.001)
    study.experiment("low-1", scores(rng, 0.86), scores(rng, 0.61), seed=1, lr=0.001)
    study.experiment("s2", scores(rng, 0.70), scores(rng, 0.71), seed=2, lr=0.003)
    study.experiment("low-2", scores(rng, 0.85), scores(rng, 0.60), seed=2, lr=0.001)
    done = study.compare("--experiments", "--by", "train.lr", "--json", str(tmp_path / "by.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "by.json").read_text())
    between = {(d["model"], d["metric"]): d for d in report["differences"] if d["model"] is not None}
    unet = between[("unet", "dice_mean")]
    assert (unet["a"], unet["b"]) == ("train.lr=0.001", "train.lr=0.003")
    assert unet["n_seeds_a"] == unet["n_seeds_b"] == 3 and unet["ci95_low"] > 0.05 and unet["detectable"]
    assert 0 < unet["mde"] < unet["diff"] and unet["ci_adjusted_low"] is None and unet["correction"] is None
    assert 0.5 < unet["p_improvement_low"] <= unet["p_improvement"] <= unet["p_improvement_high"] <= 1
    resnet = between[("resnet34_unet", "dice_mean")]
    assert resnet["ci95_high"] < -0.03 and resnet["detectable"]
    assert "UNet, dice_mean: train.lr=0.001 minus train.lr=0.003: +0.1" in done.stdout
    assert "a detectable difference" in done.stdout


def test_by_key_with_three_recipes_corrects_each_family_and_says_so(study: Study, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    levels = {0.003: (0.70, 0.70), 0.001: (0.80, 0.62), 0.0003: (0.71, 0.69)}
    for seed in range(3):
        for lr, (unet, resnet) in levels.items():
            if seed == 0 and lr == 0.003:
                study.commit(scores(rng, unet), scores(rng, resnet), seed=seed, lr=lr)
            else:
                study.experiment(
                    f"lr{lr}-{seed}", scores(rng, unet + 0.005 * seed), scores(rng, resnet), seed=seed, lr=lr
                )
    out = tmp_path / "three.json"
    done = study.compare("--experiments", "--by", "train.lr", "--json", str(out), "--smallest-effect", "0.05")
    assert done.returncode == 0, done.stderr
    between = [d for d in json.loads(out.read_text())["differences"] if d["model"] is not None]
    assert len(between) == 2 * 2 * 2  # two other groups x two models x two metrics
    for d in between:
        assert d["correction"].startswith("Bonferroni over the 2 comparisons of") and d["metric"] in d["correction"]
        assert d["ci_adjusted_low"] < d["ci95_low"] <= d["ci95_high"] < d["ci_adjusted_high"]
        assert d["detectable"] == (not d["ci_adjusted_low"] <= 0 <= d["ci_adjusted_high"])
        assert d["mde"] > 0
    unet = next(d for d in between if d["model"] == "unet" and d["metric"] == "dice_mean" and d["a"].endswith("0.001"))
    assert unet["detectable"] and unet["diff"] > 0.05
    assert "each family (one model, one metric) is corrected by Bonferroni, level 0.05 / 2" in done.stdout
    assert "2-way corrected [" in done.stdout and "a difference of 0.05 needs" in done.stdout


def test_the_seeds_a_difference_needs_and_what_the_images_allow() -> None:
    rng = np.random.default_rng(6)
    base = rng.uniform(0.5, 0.9, N_IMAGES)
    a = runs_of(rng, base + rng.normal(0, 0.02, N_IMAGES), 0.01, 0.02, 4)
    b = runs_of(rng, base, 0.0, 0.02, 4)
    found = seed_difference(a, b)
    assert found.components.run_a > 0 and found.components.run_b > 0  # the projection starts from these spreads
    assert found.seeds_needed(found.mde + 1e-9) == 4  # at the study's own seed count: its own mde
    assert found.seeds_needed(found.mde / 2) > 4 and found.seeds_needed(found.mde * 3) == 2
    assert found.seeds_needed(found.images_limit() / 2) is None  # below what the test images allow: no seed count
    one = seed_difference(a[:1], b)
    assert one.mde is None and one.seeds_needed(0.01) is None and one.p_improvement is None


def test_by_key_refuses_runs_that_differ_in_other_params(study: Study) -> None:
    rng = np.random.default_rng(2)
    study.commit(scores(rng, 0.7), scores(rng, 0.7), seed=0, lr=0.003)
    study.experiment("both", scores(rng, 0.7), scores(rng, 0.7), seed=0, lr=0.001, epochs=3)
    done = study.compare("--experiments", "--by", "train.lr")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1
    assert lines[0] == (
        "error: --by train.lr: the runs differ in other params or code too; "
        "compare runs that differ in train.lr (and the seed) only"
    )


def test_runs_of_one_group_on_other_test_images_are_one_line_errors(study: Study) -> None:
    rng = np.random.default_rng(3)
    study.commit(scores(rng, 0.7), scores(rng, 0.7), seed=0)
    other = [f"other_{i:02d}" for i in range(N_IMAGES)]
    study.experiment("moved", scores(rng, 0.7), scores(rng, 0.7), names=other, seed=1)
    done = study.compare("--experiments")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: unet: the test images of moved differ from those of HEAD")


def test_against_a_commit_with_seeds_adds_the_spread_and_a_seed_level_interval(study: Study) -> None:
    rng = np.random.default_rng(4)
    study.commit(scores(rng, 0.7), scores(rng, 0.7), seed=0)
    study.experiment("s1", scores(rng, 0.75), scores(rng, 0.7), seed=1)
    study.write(scores(rng, 0.72), scores(rng, 0.7), seed=2)  # the workspace: a third seed of the same recipe
    done = study.compare("--against", "HEAD")
    assert done.returncode == 0, done.stderr
    single = [line for line in done.stdout.splitlines() if "here minus HEAD +" in line or "here minus HEAD -" in line]
    assert single and all("one training run per side (training noise not included)" in line for line in single)
    assert "detectable" not in " ".join(single)
    assert "UNet, dice_mean: one run here varies by" in done.stdout and "(sd over 3 seeds)" in done.stdout


def test_the_workspace_joins_only_the_study_of_head(study: Study, tmp_path: Path) -> None:
    """--rev of an earlier commit reads that commit and its experiments, never the workspace (it belongs to HEAD)."""
    rng = np.random.default_rng(2)
    study.commit(scores(rng, 0.70), scores(rng, 0.60), seed=42)
    old = study.head
    study.experiment("old-seed", scores(rng, 0.71), scores(rng, 0.61), seed=0)
    study.commit(scores(rng, 0.80), scores(rng, 0.50), seed=42, lr=0.001)
    study.write(scores(rng, 0.90), scores(rng, 0.40), seed=7, lr=0.001)  # uncommitted: the workspace
    at_old = study.compare("--experiments", "--rev", old[:7], "--json", str(tmp_path / "old.json"))
    assert at_old.returncode == 0, at_old.stderr
    (group,) = json.loads((tmp_path / "old.json").read_text())["groups"]
    assert group["runs"] == [old[:7], "old-seed"] and group["seeds"] == [42, 0]
    at_head = study.compare("--experiments", "--json", str(tmp_path / "head.json"))
    assert at_head.returncode == 0, at_head.stderr
    (group,) = json.loads((tmp_path / "head.json").read_text())["groups"]
    assert group["runs"] == ["HEAD", "workspace"] and group["seeds"] == [42, 7]


def test_metrics_file_holds_the_study_as_flat_numbers_dvc_can_show(study: Study, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    tables = {seed: (scores(rng, 0.75), scores(rng, 0.65)) for seed in (42, 0, 1)}
    study.commit(*tables[42], seed=42)
    for seed in (0, 1):
        study.experiment(f"seed-{seed}", *tables[seed], seed=seed)
    out = study.root / "seeds.json"
    done = study.compare("--experiments", "--metrics", str(out), "--json", str(tmp_path / "full.json"))
    assert done.returncode == 0, done.stderr
    flat = json.loads(out.read_text())
    assert all(not isinstance(value, (list, dict)) for value in flat.values())  # dvc metrics show skips lists
    unet_means = [tables[seed][0].mean() for seed in (42, 0, 1)]
    resnet_means = [tables[seed][1].mean() for seed in (42, 0, 1)]
    assert flat["n_seeds"] == 3
    assert flat["unet_dice_mean_mean"] == pytest.approx(np.mean(unet_means), abs=1e-12)
    assert flat["resnet34_unet_dice_mean_sd"] == pytest.approx(np.std(resnet_means, ddof=1), abs=1e-12)
    assert flat["unet_minus_resnet34_unet_dice_mean_diff"] == pytest.approx(
        np.mean(unet_means) - np.mean(resnet_means), abs=1e-12
    )
    (within,) = [
        d for d in json.loads((tmp_path / "full.json").read_text())["differences"] if d["metric"] == "dice_mean"
    ]
    assert flat["unet_minus_resnet34_unet_dice_mean_ci95_low"] == within["ci95_low"]
    assert flat["unet_minus_resnet34_unet_dice_mean_detectable"] is within["detectable"]
    offline = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for command in (["init", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([sys.executable, "-m", "dvc", *command], cwd=study.root, check=True, env=offline)
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "metrics", "show", "--json", "seeds.json"],
        cwd=study.root, capture_output=True, text=True, timeout=120, env=offline,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)[""]["data"]["seeds.json"]["data"]
    assert data["unet_dice_mean_mean"] == pytest.approx(flat["unet_dice_mean_mean"], abs=1e-12)
