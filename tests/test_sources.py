"""The docs' figures agree with the result files they cite, and ARCHITECTURE.md's table lists every module.

Each table is found by its header row and mapped to its source file here, explicitly: a changed header, a row
that maps to nothing, or a number that its file does not give (at the rounding the page prints) fails, naming
the page, the line and the file. So a result file changed without the docs, or the docs without the file,
fails. A figure a page prints to fewer decimals matches when the file's value rounds to it (half a unit of the
last printed digit either way).

Checked: README.md's results table, the ``--table`` output it shows and its seed study's output (against
``metrics/<model>.json``, ``benchmarks/all_pet.json`` and ``benchmarks/studies/default_seeds.json``);
benchmarks/RESULTS.md's speed, default-run, profile, recipe, over-seeds and laptop tables (against
``benchmarks/results.json``, ``benchmarks/measurements/xeon-amx.json``, ``benchmarks/default_run.json``,
``benchmarks/profile_step.json``, ``benchmarks/studies/recipes.json``, ``benchmarks/studies/final.json`` and
``benchmarks/preset_time_laptop.json``); docs/real-data.md's laptop table. The tables that cite no file
(the GPU estimates) are not checked.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from petseg.models import label

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
REAL_DATA = REPO / "docs" / "real-data.md"
ARCHITECTURE = REPO / "ARCHITECTURE.md"
NUMBER = re.compile(r"[+\-−]?\d+(?:\.\d+)?")


@cache
def load(relative: str) -> Any:
    return json.loads((REPO / relative).read_text(encoding="utf-8"))


# ---- reading pages


class Table:
    """A Markdown table of a page: its header cells and its rows (line number from 1, cells)."""

    def __init__(self, page: Path, header: tuple[str, ...], rows: list[tuple[int, tuple[str, ...]]]):
        self.page, self.header, self.rows = page, header, rows

    def where(self, line: int) -> str:
        return f"{self.page.relative_to(REPO)}:{line}"

    def column(self, name: str) -> int:
        return self.header.index(name)


def cells(line: str) -> tuple[str, ...]:
    return tuple(cell.strip() for cell in line.strip().strip("|").split("|"))


def tables(page: Path) -> list[Table]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s|:-]+\|$", lines[i + 1].strip()):
            header, rows, j = cells(lines[i]), [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append((j + 1, cells(lines[j])))
                j += 1
            found.append(Table(page, header, rows))
            i = j
        else:
            i += 1
    return found


def table(page: Path, header: Sequence[str]) -> Table:
    """The one table of ``page`` with exactly this header row."""
    matching = [t for t in tables(page) if t.header == tuple(header)]
    assert len(matching) == 1, (
        f"{page.relative_to(REPO)}: {len(matching)} tables with the header | {' | '.join(header)} | "
        "(a changed header needs its mapping in tests/test_sources.py changed too)"
    )
    return matching[0]


def numbers(text: str) -> list[str]:
    return NUMBER.findall(text.replace("**", ""))


def agrees(printed: str, value: float) -> bool:
    """Whether ``value`` rounds to ``printed`` (``−`` is a minus; half a unit of the last digit either way)."""
    printed = printed.replace("−", "-")
    decimals = len(printed.partition(".")[2])
    return math.isclose(float(printed), value, abs_tol=0.5 * 10**-decimals + 1e-9)


def check_cell(problems: list[str], where: str, what: str, cell: str, values: Sequence[float]) -> None:
    """The cell prints exactly ``values``, in order, each at its own rounding."""
    printed = numbers(cell)
    if len(printed) != len(values) or not all(agrees(p, v) for p, v in zip(printed, values)):
        shown = ", ".join(f"{v:.6g}" for v in values)
        problems.append(f"{where}: {what}: the page prints {cell!r}, the file gives {shown}")


def report(problems: list[str]) -> None:
    assert not problems, "figures that disagree with their result files:\n" + "\n".join(problems)


def mean_sd(values: Sequence[float]) -> list[float]:
    return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


# ---- README.md


def test_readme_results_table_is_that_of_its_files():
    metrics = {model: load(f"metrics/{model}.json") for model in ("unet", "resnet34_unet")}
    all_pet = load("benchmarks/all_pet.json")
    sources = {
        "UNet (base 16)": ("metrics/unet.json", metrics["unet"]),
        "ResNet34-UNet (from scratch)": ("metrics/resnet34_unet.json", metrics["resnet34_unet"]),
        "every pixel called pet": ("benchmarks/all_pet.json", all_pet),
    }
    columns: dict[str, Callable[[dict], float]] = {
        "per-image Dice": lambda m: m["dice_mean"],
        "Boundary IoU": lambda m: m["boundary_iou_mean"],
        "parameters": lambda m: m["parameters"] / 1e6,
        "s/epoch": lambda m: m["train_seconds_per_epoch"],
    }
    found = table(README, ("", *columns))
    assert {row[0] for _, row in found.rows} == set(sources), found.where(found.rows[0][0])
    problems: list[str] = []
    for line, row in found.rows:
        name, figures = sources[row[0]]
        for cell, column in zip(row[1:], columns):
            if cell:
                check_cell(
                    problems, found.where(line), f"{row[0]}, {column} ({name})", cell, [columns[column](figures)]
                )
    report(problems)
    assert metrics["unet"]["n_images"] == all_pet["n_images"], "the all-pet floor is of another test set"


def readme_block(start: str) -> tuple[int, list[str]]:
    """The lines of README.md's indented block whose first line starts with ``start`` (after the indent)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("    ") and line.strip().startswith(start):
            block = []
            for following in lines[i:]:
                if not following.startswith("    "):
                    break
                block.append(following.strip())
            return i + 1, block
    raise AssertionError(f"README.md shows no block starting {start!r}")


def test_readme_compare_table_output_is_that_of_metrics():
    line, block = readme_block("metric ")
    models = block[0].split()[1:]
    names = {label(model): model for model in ("unet", "resnet34_unet")}
    assert " ".join(models) == "UNet ResNet34-UNet", f"README.md:{line}: {block[0]!r}"
    metrics = {name: load(f"metrics/{model}.json") for name, model in names.items()}
    problems: list[str] = []
    for offset, row in enumerate(block[1:], start=1):
        if row.startswith("..."):
            keys = numbers(row)
            check_cell(problems, f"README.md:{line + offset}", "the number of keys", row, [len(metrics["UNet"])])
            assert keys, row
            break
        key, *cells_ = row.split()
        for model, cell in zip(("UNet", "ResNet34-UNet"), cells_):
            check_cell(problems, f"README.md:{line + offset}", f"{model} {key}", cell, [metrics[model][key]])
    else:
        problems.append(f"README.md:{line}: the block ends without its '...' line")
    report(problems)


SEED_MEANS = re.compile(r"^(\S+)\s+dice_mean (\S+) \+- (\S+)\s+boundary_iou_mean (\S+) \+- (\S+)")
SEED_DIFFERENCE = re.compile(
    r"^(\S+) minus (\S+), (\w+): ([+\-]\S+), 95% CI \[([+\-]\S+), ([+\-]\S+)\] \((\d+) vs (\d+) seeds, (\d+) images\)"
)


def test_readme_seed_study_output_is_that_of_its_study_file():
    study = load("benchmarks/studies/default_seeds.json")
    (group,) = study["groups"]
    line, block = readme_block(f"{len(group['runs'])} run(s) in")  # the file's run count, or no block is found
    where = "README.md's seed study output (benchmarks/studies/default_seeds.json)"
    models = {label(model): model for model in group["models"]}
    problems: list[str] = []
    head = numbers(block[0])
    if [int(head[0]), int(head[1])] != [len(group["runs"]), len(study["groups"])]:
        problems.append(f"README.md:{line}: {block[0]!r}: the file has {len(group['runs'])} runs in 1 group")
    if f"train.seed {', '.join(str(s) for s in group['seeds'])} ({', '.join(group['runs'])})" not in block[1]:
        problems.append(f"README.md:{line + 1}: seeds and runs are not the file's {group['seeds']} {group['runs']}")
    seen_means, seen_differences = set(), 0
    for offset, row in enumerate(block[2:], start=2):
        if match := SEED_MEANS.match(row):
            model = models[match.group(1)]
            seen_means.add(model)
            figures = group["models"][model]
            expected = [figures[metric][key] for metric in ("dice_mean", "boundary_iou_mean") for key in ("mean", "sd")]
            for printed, value in zip(match.groups()[1:], expected):
                if not agrees(printed, value):
                    problems.append(f"README.md:{line + offset}: {printed} is not the file's {value:.6g}")
        elif match := SEED_DIFFERENCE.match(row):
            a, b, metric = models[match.group(1)], models[match.group(2)], match.group(3)
            (record,) = [d for d in study["differences"] if (d["a"], d["b"], d["metric"]) == (a, b, metric)]
            expected = [record[k] for k in ("diff", "ci95_low", "ci95_high", "n_seeds_a", "n_seeds_b", "n_images")]
            for printed, value in zip(match.groups()[3:], expected):
                if not agrees(printed, value):
                    problems.append(f"README.md:{line + offset}: {printed} is not the file's {value:.6g}")
            seen_differences += 1
    assert seen_means == set(group["models"]) and seen_differences, f"{where}: no mean or difference line read"
    report(problems)


SEED_PROSE = re.compile(
    r"UNet\s+\*\*(\S+) ±\s+(\S+)\*\*, ResNet34-UNet\s+\*\*(\S+) ±\s+(\S+)\*\*.*?"
    r"([+−-]\d\.\d+)\*{0,2},?\s+(?:95% interval over seeds\s+and test images\s+)?\[([+−-]\d\.\d+),\s+([+−-]\d\.\d+)\]"
    r".*?(?:detects|detects only)\s+(\d\.\d+) or more",
    re.S,
)


@pytest.mark.parametrize(
    "study, start",
    [("default_seeds.json", "Over four seeds of the same recipe"), ("real_seeds.json", "**On real photos**")],
)
def test_readme_seed_verdicts_are_those_of_their_study_files(study, start):
    """The README's prose verdicts: each model's mean ± sd over seeds, the difference, its interval and mde."""
    text = README.read_text(encoding="utf-8")
    assert f"benchmarks/studies/{study}" in text and start in text, f"README.md does not cite {study} at {start!r}"
    paragraph = text[text.index(start) :].split("\n\n", 1)[0]
    match = SEED_PROSE.search(paragraph)
    assert match, f"README.md: the paragraph starting {start!r} has no verdict figures in the expected form"
    data = load(f"benchmarks/studies/{study}")
    (group,) = data["groups"]
    (dice,) = [d for d in data["differences"] if d["metric"] == "dice_mean" and d["group"] == group["name"]]
    expected = [group["models"][m]["dice_mean"][k] for m in ("unet", "resnet34_unet") for k in ("mean", "sd")]
    expected += [dice["diff"], dice["ci95_low"], dice["ci95_high"], dice["mde"]]
    problems = [
        f"README.md ({start!r}): {printed} is not {study}'s {value:.6g}"
        for printed, value in zip(match.groups(), expected)
        if not agrees(printed, value)
    ]
    report(problems)


# ---- benchmarks/RESULTS.md

SPEED_ROWS = {  # the backquoted name that starts a row (or its first words) -> the keys of its figures
    "preprocess_ratio": ("preprocess_ratio_128", "preprocess_ratio_256"),
    "preprocess_cpu_ratio": ("preprocess_cpu_ratio_128", "preprocess_cpu_ratio_256"),
    "unet_train_efficiency_ratio": ("unet_train_efficiency_ratio",),
    "resnet34_unet_train_efficiency_ratio": ("resnet34_unet_train_efficiency_ratio",),
    "loader_speedup_ratio": ("loader_speedup_ratio",),
    "seed_loop_speedup_ratio": ("seed_loop_speedup_ratio",),
    "heap_tuning_ratio": ("heap_tuning_ratio",),
    "compile_speedup_ratio": ("compile_speedup_ratio",),
    "bf16_speedup_ratio": ("bf16_speedup_ratio",),
    "eval_images_per_s": ("eval_images_per_s", "infer_images_per_s"),
    "preprocess peak memory": ("preprocess_peak_rss_mb_n", "preprocess_peak_rss_mb_2n"),
}
SPEED_COLUMNS = {  # column -> its file and the figures in it
    "here": ("benchmarks/results.json", lambda data: data),
    "Xeon AMX": ("benchmarks/measurements/xeon-amx.json", lambda data: data["speed"]),
}


def row_key(cell: str, known: Sequence[str]) -> str | None:
    name = re.match(r"`([^`]+)`", cell)
    if name:
        return name.group(1) if name.group(1) in known else None
    return next((key for key in known if cell.startswith(key)), None)


def test_results_speed_table_is_that_of_its_files():
    found = table(RESULTS, ("figure", *SPEED_COLUMNS, "target"))  # target: a goal, not a measurement
    problems: list[str] = []
    keys = [row_key(row[0], list(SPEED_ROWS)) for _, row in found.rows]
    assert None not in keys, f"{found.where(found.rows[keys.index(None)][0])}: a row with no source mapping"
    assert sorted(keys) == sorted(SPEED_ROWS), "a speed figure is missing from RESULTS.md or listed twice"
    for (line, row), key in zip(found.rows, keys):
        for column, (name, figures) in SPEED_COLUMNS.items():
            data, cell = figures(load(name)), row[found.column(column)]
            if cell == "not recorded":
                absent = [k for k in SPEED_ROWS[key] if k in data]
                if absent:
                    problems.append(f"{found.where(line)}: {key}: 'not recorded', but {name} has {absent}")
                continue
            missing = [k for k in SPEED_ROWS[key] if k not in data]
            if missing:
                problems.append(f"{found.where(line)}: {key}, {column}: {name} has no {missing}")
                continue
            check_cell(
                problems, found.where(line), f"{key}, {column} ({name})", cell, [data[k] for k in SPEED_ROWS[key]]
            )
    report(problems)


def test_results_default_run_table_is_that_of_its_file():
    run = load("benchmarks/default_run.json")
    stages = tuple(run["stage_seconds"])
    found = table(RESULTS, (*stages, "total"))
    ((line, row),) = found.rows
    problems: list[str] = []
    for stage, cell in zip((*stages, "total"), row):
        value = run["total_seconds"] if stage == "total" else run["stage_seconds"][stage]
        check_cell(problems, found.where(line), f"{stage} (benchmarks/default_run.json)", cell, [value])
    report(problems)


def test_results_profile_table_is_that_of_its_file():
    steps = {(s["convolutions"], s["layout"]): s for s in load("benchmarks/profile_step.json")["steps"]}
    convolutions = {"plain `nn.Conv2d`": "plain", "centre tap on 1 × 1 maps": "centre tap"}
    layouts = {"contiguous": "contiguous_format", "channels_last": "channels_last"}
    found = table(RESULTS, ("convolutions", "layout", "forward", "backward"))
    problems: list[str] = []
    shown = set()
    for line, (conv, layout, forward, backward) in found.rows:
        step = steps[convolutions[conv], layouts[layout]]
        shown.add((convolutions[conv], layouts[layout]))
        for cell, key in ((forward, "forward_s"), (backward, "backward_s")):
            check_cell(problems, found.where(line), f"{conv}, {layout}, {key}", cell, [step[key]])
    assert shown == set(steps), "a step of benchmarks/profile_step.json is missing from RESULTS.md"
    report(problems)


def test_results_recipe_table_is_that_of_its_file():
    records = load("benchmarks/studies/recipes.json")
    found = table(
        RESULTS,
        ("variant", "epochs", "seeds", "validation Dice", "held-out Dice", "held-out, flip TTA", "s/epoch"),
    )
    problems: list[str] = []
    assert [row[0] for _, row in found.rows] == list(dict.fromkeys(r["variant"] for r in records))
    for line, (variant, epochs, seeds, val, heldout, tta, seconds) in found.rows:
        runs = [r for r in records if r["variant"] == variant]
        where, what = found.where(line), f"{variant} (benchmarks/studies/recipes.json)"
        check_cell(problems, where, what + ", epochs and seeds", f"{epochs} {seeds}", [runs[0]["epochs"], len(runs)])
        check_cell(problems, where, what + ", validation", val, mean_sd([r["val_dice"] for r in runs]))
        check_cell(problems, where, what + ", held-out", heldout, mean_sd([r["heldout_dice"] for r in runs]))
        if all("heldout_dice_tta" in r for r in runs):
            check_cell(problems, where, what + ", TTA", tta, mean_sd([r["heldout_dice_tta"] for r in runs]))
        elif tta != "not recorded":
            problems.append(f"{where}: {what}: TTA {tta!r}, but not every run recorded it")
        check_cell(
            problems, where, what + ", s/epoch", seconds, [statistics.median(r["seconds_per_epoch"] for r in runs)]
        )
    report(problems)


def final_runs(variant: str, split: str, prediction: str) -> np.ndarray:
    """Runs x images Dice of a variant of benchmarks/studies/final.json, runs in seed order."""
    runs = sorted(
        (r for r in load("benchmarks/studies/final.json") if r["variant"] == variant), key=lambda r: r["seed"]
    )
    assert runs, f"benchmarks/studies/final.json has no variant {variant!r}"
    return np.array([r["per_image_dice"][split][prediction] for r in runs])


def test_results_over_seeds_table_is_that_of_its_file():
    records = load("benchmarks/studies/final.json")
    found = table(RESULTS, ("model", "training", "prediction", "seeds", "validation Dice", "held-out Dice", "s/epoch"))
    problems: list[str] = []
    shown = set()
    for line, (model, training, prediction, seeds, val, heldout, seconds) in found.rows:
        variant, where = f"{model} {training}", found.where(line)
        shown.add((variant, prediction))
        what = f"{variant}, {prediction} (benchmarks/studies/final.json)"
        for cell, split in ((val, "val"), (heldout, "test")):
            means = final_runs(variant, split, prediction).mean(axis=1)
            check_cell(problems, where, f"{what}, {split}", cell, mean_sd(list(means)))
        check_cell(problems, where, what + ", seeds", seeds, [len(final_runs(variant, "test", prediction))])
        runs = [r for r in records if r["variant"] == variant]
        check_cell(
            problems, where, what + ", s/epoch", seconds, [statistics.median(r["seconds_per_epoch"] for r in runs)]
        )
    scored = {(r["variant"], p) for r in records if "per_image_dice" in r for p in r["per_image_dice"]["test"]}
    assert shown == scored, f"scored in final.json but not in RESULTS.md: {sorted(scored - shown)}"
    report(problems)


def test_results_differences_over_seeds_are_those_of_its_file():
    """The differences table: recomputed from final.json's per-image Dice with petseg.compare.stats, as
    ``python benchmarks/recipes.py final --report`` computes it (a prediction change paired by run)."""
    from petseg.compare.stats import seed_difference

    records = [r for r in load("benchmarks/studies/final.json") if "per_image_dice" in r]
    header = ("model", "recipe", "difference", "95% interval", "mde", "seeds", "images", "detectable")
    found = table(RESULTS, header)
    problems: list[str] = []
    shown = set()
    for line, (model, recipe, diff, interval, mde, seeds, images, detectable) in found.rows:
        training, _, prediction = recipe.rpartition(", ")
        variant, reference = f"{model} {training}", f"{model} report 2"
        shown.add((variant, prediction))
        runs, base = final_runs(variant, "test", prediction), final_runs(reference, "test", "plain")
        d = seed_difference(runs, base, same_runs=variant == reference and runs.shape == base.shape)
        where, what = found.where(line), f"{variant}, {prediction} (benchmarks/studies/final.json)"
        check_cell(problems, where, what + ", difference", diff, [d.diff])
        check_cell(problems, where, what + ", interval", interval, [d.low, d.high])
        check_cell(problems, where, what + ", mde", mde, [d.mde])
        check_cell(problems, where, what + ", seeds", seeds, [d.n_seeds_a, d.n_seeds_b])
        check_cell(problems, where, what + ", images", images, [d.n_images])
        if detectable != ("yes" if d.detectable else "no"):
            problems.append(f"{where}: {what}: detectable is {detectable!r}, recomputed {d.detectable}")
    compared = {
        (r["variant"], p)
        for r in records
        if any(q["variant"] == f"{r['model']} report 2" for q in records)
        for p in r["per_image_dice"]["test"]
    } - {(f"{r['model']} report 2", "plain") for r in records}
    assert shown == compared, f"in final.json but not in RESULTS.md's differences: {sorted(compared - shown)}"
    report(problems)


def laptop_rows(page: Path, header: Sequence[str], seconds_row: str, epochs_row: str) -> None:
    timing = load("benchmarks/preset_time_laptop.json")
    per_epoch = [timing["per_epoch"][m]["seconds_per_epoch"] for m in ("unet", "resnet34_unet")]
    per_epoch.append(sum(per_epoch))
    epochs = timing["planned_epochs"]
    expected = {seconds_row: per_epoch, epochs_row: [epochs * s / 60 for s in per_epoch]}
    found = table(page, header)
    assert [row[0] for _, row in found.rows] == list(expected), found.where(found.rows[0][0])
    problems: list[str] = []
    for line, row in found.rows:
        for cell, value in zip(row[1:], expected[row[0]]):
            check_cell(problems, found.where(line), f"{row[0]} (benchmarks/preset_time_laptop.json)", cell, [value])
    assert math.isclose(timing["projected_training_minutes"], round(expected[epochs_row][-1], 1))
    report(problems)


def test_results_laptop_table_is_that_of_its_file():
    laptop_rows(
        RESULTS,
        ("", "UNet base 16", "ResNet34-UNet", "both"),
        "seconds per epoch, training + validation",
        "2 epochs (the preset's `train.epochs`)",
    )


def test_real_data_laptop_table_is_that_of_its_file():
    laptop_rows(
        REAL_DATA,
        ("", "UNet (base 16)", "ResNet34-UNet", "both"),
        "seconds per epoch (training + validation)",
        "`train.epochs: 2` (the preset)",
    )


# ---- ARCHITECTURE.md


def architecture_modules(text: str, root: Path) -> tuple[set[str], list[str]]:
    """The modules ARCHITECTURE.md's table lists (paths from ``root``), and the paths it names that do not exist.

    A row's first column names modules in backquotes: a path (``petseg/io.py``), then names in the same folder
    (``errors.py``); a folder (``petseg/training/``), whose modules its second column names in backquotes
    (``batches``; ``__init__`` for the folder's own); or a pattern (``petseg/**/__init__.py``).
    """
    section = text.split("## The modules and what each owns", 1)[1].split("\n## ", 1)[0]
    listed: set[str] = set()
    stale: list[str] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first, _, owns = line.strip().strip("|").partition("|")
        folder = ""
        for name in re.findall(r"`([^`]+)`", first):
            path = name if name.startswith(("petseg/", "stages/")) else folder + name
            folder = path if path.endswith("/") else path.rpartition("/")[0] + "/"
            if "*" in path:
                listed.update(p.relative_to(root).as_posix() for p in root.glob(path))
            elif path.endswith("/"):
                if not (root / path).is_dir():
                    stale.append(path)
                for word in re.findall(r"`(\w+)`", owns):
                    for candidate in (f"{path}{word}.py", f"{path}{word}/__init__.py"):
                        if (root / candidate).is_file():
                            listed.add(candidate)
            elif (root / path).is_file():
                listed.add(path)
            else:
                stale.append(path)
    return listed, stale


def test_every_module_is_in_the_architecture_table():
    listed, stale = architecture_modules(ARCHITECTURE.read_text(encoding="utf-8"), REPO)
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "petseg").rglob("*.py")}
    assert not stale, f"ARCHITECTURE.md's table names what does not exist: {stale}"
    missing = sorted(modules - listed)
    assert not missing, f"modules missing from ARCHITECTURE.md's table of modules: {missing}"
