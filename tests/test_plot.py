"""The plot stage from real DVCLive logs, real per-image tables and a real test cache, for every registered model."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from petseg.errors import DataError
from petseg.evaluation import evaluate_models
from petseg.evaluation.tables import read_per_image_csv, write_per_image_csv
from petseg.models import MODEL_NAMES, MODELS
from petseg.plotting.data import TABLES
from petseg.plotting.gallery import gallery_pixel_size
from petseg.plotting.run import OUTPUTS, plot_all
from petseg.training import fit
from petseg.training.log import metric_path, read_metric
from tests.cachemaker import write_cache
from tests.paramsfile import evaluate_params, train_params, unet

REPO = Path(__file__).resolve().parents[1]
N_WORST = 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dvclive/<model>/ from real training runs, plots/evaluate/ from a real evaluation, for every registered model.

    Training a ResNet34-UNet takes half a minute on a CPU, so every model's logs
    and tables come from differently configured UNet runs: the files are exactly
    what DVCLive and the evaluate stage write.
    """
    root = tmp_path_factory.mktemp("plot")
    cache = write_cache(root / "cache", {"train": 32, "val": 8, "test": 8}, image_size=32)
    for k, name in enumerate(MODEL_NAMES):
        fit(
            "unet",
            unet(base_channels=4, batch_size=8),
            train_params(epochs=3 - k % 2, lr=3e-3 / (1 + k), scheduler=("onecycle", "cosine")[k % 2], device="cpu"),
            cache,
            root / "models" / name / "unet",
            live_dir=root / "dvclive" / name,
            progress=False,
        )
        evaluate_models(
            ["unet"],
            evaluate_params(tta=k % 2 == 1, n_worst=N_WORST),
            cache_dir=cache,
            models_dir=root / "models" / name,
            metrics_dir=root / "metrics" / name,
            plots_dir=root / "eval" / name,
            device="cpu",
        )
        for suffix in (".csv", "_by_breed.csv", "_worst.npy"):
            (root / "plots" / "evaluate").mkdir(parents=True, exist_ok=True)
            shutil.copy(root / "eval" / name / f"unet{suffix}", root / "plots" / "evaluate" / f"{name}{suffix}")
    return root


def kwargs(root: Path, out: Path) -> dict[str, Path]:
    return dict(
        live_root=root / "dvclive", evaluate_dir=root / "plots" / "evaluate", cache_dir=root / "cache", out_dir=out
    )


def rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def colour_pixels(path: Path, colour: str) -> int:
    return int(np.all(np.asarray(Image.open(path).convert("RGB")) == rgb(colour), axis=-1).sum())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_chart_draws_every_model_in_its_colour_and_label(inputs: Path) -> None:
    out = inputs / "out"
    legends = plot_all(**kwargs(inputs, out))
    assert list(legends) == list(OUTPUTS)
    for name in OUTPUTS:
        path = out / name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] == 800 and image.size[1] >= 500
        for info in MODELS.values():
            assert colour_pixels(path, info.colour) > 50, (name, info.name)
            assert any(entry.startswith(info.label) for entry in legends[name]), (name, legends[name])
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_chart_data_holds_every_model_with_its_label_and_colour(inputs: Path) -> None:
    out = inputs / "data-out"
    plot_all(**kwargs(inputs, out))
    assert sorted(p.stem for p in (out / "data").iterdir()) == sorted(TABLES)
    for table in TABLES:
        rows = read_csv(out / "data" / f"{table}.csv")
        assert {(row["model"], row["colour"]) for row in rows} == {(i.label, i.colour) for i in MODELS.values()}
    val_dice = read_csv(out / "data" / "val_dice.csv")
    first = MODELS[MODEL_NAMES[0]]
    logged = read_metric(metric_path(inputs / "dvclive" / first.name, "val/dice"), first.train_stage)
    mine = [row for row in val_dice if row["model"] == first.label]
    assert [int(r["epoch"]) for r in mine] == logged.epochs.tolist()
    assert [float(r["dice"]) for r in mine] == logged.values.tolist()
    widths = [float(next(r for r in val_dice if r["model"] == i.label)["width"]) for i in MODELS.values()]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]  # the first model drawn widest
    loss_splits = {row["split"] for row in read_csv(out / "data" / "loss.csv")}
    assert loss_splits == {"train", "validation"}


def test_galleries_show_the_worst_images_and_follow_the_masks_file(inputs: Path, tmp_path: Path) -> None:
    plot_all(**kwargs(inputs, tmp_path / "out"))
    for name in MODEL_NAMES:
        with Image.open(tmp_path / "out" / "gallery" / f"{name}_worst.png") as image:
            assert image.size == gallery_pixel_size(N_WORST)
    shutil.copytree(inputs / "plots", tmp_path / "plots")
    shutil.copytree(inputs / "dvclive", tmp_path / "dvclive")
    (tmp_path / "cache").symlink_to(inputs / "cache")
    (tmp_path / "plots" / "evaluate" / f"{MODEL_NAMES[0]}_worst.npy").unlink()  # evaluate.n_worst: 0
    plot_all(**kwargs(tmp_path, tmp_path / "out"))
    assert not (tmp_path / "out" / "gallery" / f"{MODEL_NAMES[0]}_worst.png").exists()  # the stale gallery is gone
    assert (tmp_path / "out" / "gallery" / f"{MODEL_NAMES[1]}_worst.png").is_file()
    table_path = tmp_path / "plots" / "evaluate" / f"{MODEL_NAMES[1]}.csv"
    table = read_per_image_csv(table_path)
    write_per_image_csv(table_path, replace(table, names=[f"other_{name}" for name in table.names]))
    with pytest.raises(
        DataError,
        match=r"cache/test: the test cache holds other images than the evaluate stage scored.*re-run evaluate",
    ):
        plot_all(**kwargs(tmp_path, tmp_path / "out"))


def test_epochs_are_numbered_from_one(inputs: Path) -> None:
    series = read_metric(metric_path(inputs / "dvclive" / MODEL_NAMES[0], "val/dice"), "train_unet")
    assert series.epochs.tolist() == [1, 2, 3]
    assert np.all((series.values >= 0) & (series.values <= 1))


def test_missing_or_broken_inputs_name_the_file_and_stage(inputs: Path, tmp_path: Path) -> None:
    shutil.copytree(inputs / "dvclive", tmp_path / "dvclive")
    shutil.copytree(inputs / "plots", tmp_path / "plots")
    shutil.copytree(inputs / "cache", tmp_path / "cache")
    first, last = MODELS[MODEL_NAMES[0]], MODELS[MODEL_NAMES[-1]]
    arguments = kwargs(tmp_path, tmp_path / "out")
    (tmp_path / "plots" / "evaluate" / f"{last.name}.csv").unlink()
    with pytest.raises(DataError, match=rf"{last.name}\.csv: file not found; the evaluate stage writes it"):
        plot_all(**arguments)
    (tmp_path / "dvclive" / last.name / "plots" / "metrics" / "val" / "dice.tsv").unlink()
    missing = rf"{last.name}/plots/metrics/val/dice\.tsv: file not found; the {last.train_stage} stage"
    with pytest.raises(DataError, match=missing):
        plot_all(**arguments)
    (tmp_path / "dvclive" / first.name / "plots" / "metrics" / "lr.tsv").write_text("step\tlr\n0\tfast\n")
    with pytest.raises(DataError, match=rf"{first.name}/plots/metrics/lr\.tsv: not a DVCLive metric log"):
        plot_all([first.name], **arguments)
    assert not (tmp_path / "out").exists()  # inputs are all checked before anything is drawn


def test_stage_script(inputs: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "stages.plot", "--params", str(REPO / "params.yaml"),
               "--live", str(inputs / "dvclive"), "--evaluate", str(inputs / "plots" / "evaluate"),
               "--cache", str(inputs / "cache")]  # fmt: skip
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "plots")], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted([*OUTPUTS, "data", "gallery"])
    failed = subprocess.run([*command[:5], "--live", str(tmp_path / "none"), "--cache", str(inputs / "cache"),
                             "--out", str(tmp_path / "x")],
                            capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"{MODELS[MODEL_NAMES[0]].train_stage} stage writes it" in failed.stderr


def test_dvc_plot_templates_take_label_and_colour_from_the_data() -> None:
    """No template names a model: the colour legend is the data's model column, its colours the data's colour."""
    templates = sorted((REPO / ".dvc" / "plots").glob("*.json"))
    assert [t.stem for t in templates] == ["models_bars", "models_linear", "models_scatter"]
    for template in templates:
        text = template.read_text()
        colour = json.loads(text)["encoding"]["color"]
        assert colour["field"] == "model" and colour["scale"] == {"range": {"field": "colour"}}, template.name
        for info in MODELS.values():
            assert info.label not in text and f"'{info.name}'" not in text, (template.name, info.name)
    charts = [entry for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] if isinstance(entry, dict)]
    files = [file for entry in charts for spec in entry.values() for file in spec["y"]]
    assert sorted(files) == sorted(f"plots/data/{table}.csv" for table in TABLES)  # one table per chart, no model
