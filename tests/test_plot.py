"""The plot stage from real DVCLive logs and real per-image tables."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petseg.errors import DataError
from petseg.evaluation import evaluate_models
from petseg.plotting.run import OUTPUTS, plot_all
from petseg.training import fit
from petseg.training.log import metric_path, read_metric
from tests.cachemaker import write_cache
from tests.paramsfile import evaluate_params, train_params, unet

REPO = Path(__file__).resolve().parents[1]
BLUE, RED = (31, 119, 180), (214, 39, 40)  # matplotlib tab:blue, tab:red


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dvclive/<model>/ from real training runs and plots/evaluate/<model>.csv from a real evaluation.

    Training a ResNet34-UNet takes half a minute on a CPU, so the second model's
    logs and table come from a second, differently configured UNet run: the
    files are exactly what DVCLive and the evaluate stage write.
    """
    root = tmp_path_factory.mktemp("plot")
    cache = write_cache(root / "cache", {"train": 32, "val": 8, "test": 8}, image_size=32)
    runs = {
        "unet": train_params(epochs=3, lr=3e-3, device="cpu"),
        "resnet34_unet": train_params(epochs=2, lr=1e-3, scheduler="cosine", device="cpu"),
    }
    for name, config in runs.items():
        fit(
            "unet",
            unet(base_channels=4, batch_size=8),
            config,
            cache,
            root / "models" / name,
            live_dir=root / "dvclive" / name,
            progress=False,
        )
    (root / "plots" / "evaluate").mkdir(parents=True)
    for name in runs:  # each table from a real evaluation (of the first run's checkpoint, with and without TTA)
        evaluate_models(
            ["unet"],
            evaluate_params(tta=name != "unet", n_worst=0),
            cache_dir=cache,
            models_dir=root / "models",
            metrics_dir=root / "metrics",
            plots_dir=root / "eval" / name,
            device="cpu",
        )
        shutil.copy(root / "eval" / name / "unet.csv", root / "plots" / "evaluate" / f"{name}.csv")
        shutil.copy(root / "eval" / name / "unet_by_breed.csv", root / "plots" / "evaluate" / f"{name}_by_breed.csv")
    return root


def colour_pixels(path: Path, colour: tuple[int, int, int]) -> int:
    return int(np.all(np.asarray(Image.open(path).convert("RGB")) == colour, axis=-1).sum())


def test_four_valid_pngs_with_both_models(inputs: Path) -> None:
    paths = plot_all(live_root=inputs / "dvclive", evaluate_dir=inputs / "plots" / "evaluate", out_dir=inputs / "out")
    assert [p.name for p in paths] == list(OUTPUTS)
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] == 800 and image.size[1] >= 500
        assert colour_pixels(path, BLUE) > 50 and colour_pixels(path, RED) > 50, path.name  # UNet blue, ResNet red
    assert not list((inputs / "out").glob(".*"))  # no temporary files left behind


def test_epochs_are_numbered_from_one(inputs: Path) -> None:
    series = read_metric(metric_path(inputs / "dvclive" / "unet", "val/dice"), "train_unet")
    assert series.epochs.tolist() == [1, 2, 3]
    assert np.all((series.values >= 0) & (series.values <= 1))


def test_missing_or_broken_inputs_name_the_file_and_stage(inputs: Path, tmp_path: Path) -> None:
    shutil.copytree(inputs / "dvclive", tmp_path / "dvclive")
    shutil.copytree(inputs / "plots", tmp_path / "plots")
    kwargs = dict(
        live_root=tmp_path / "dvclive", evaluate_dir=tmp_path / "plots" / "evaluate", out_dir=tmp_path / "out"
    )
    (tmp_path / "plots" / "evaluate" / "resnet34_unet.csv").unlink()
    with pytest.raises(DataError, match=r"resnet34_unet\.csv: file not found; the evaluate stage writes it"):
        plot_all(**kwargs)
    (tmp_path / "dvclive" / "resnet34_unet" / "plots" / "metrics" / "val" / "dice.tsv").unlink()
    missing = r"resnet34_unet/plots/metrics/val/dice\.tsv: file not found; the train_resnet stage"
    with pytest.raises(DataError, match=missing):
        plot_all(**kwargs)
    (tmp_path / "dvclive" / "unet" / "plots" / "metrics" / "lr.tsv").write_text("step\tlr\n0\tfast\n")
    with pytest.raises(DataError, match=r"unet/plots/metrics/lr\.tsv: not a DVCLive metric log"):
        plot_all(["unet"], **kwargs)
    assert not (tmp_path / "out").exists()  # inputs are all checked before anything is drawn


def test_stage_script(inputs: Path, tmp_path: Path) -> None:
    command = [sys.executable, str(REPO / "stages" / "plot.py"), "--params", str(REPO / "params.yaml"),
               "--live", str(inputs / "dvclive"), "--evaluate", str(inputs / "plots" / "evaluate")]  # fmt: skip
    done = subprocess.run([*command, "--out", str(tmp_path / "plots")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(OUTPUTS)
    failed = subprocess.run([*command[:2], "--params", str(REPO / "params.yaml"), "--live", str(tmp_path / "none"),
                             "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "train_unet stage writes it" in failed.stderr


def test_dvc_plot_templates_name_every_registered_model() -> None:
    """The templates colour and label models by name; a model added to the registry must be added there too."""
    from petseg.models import MODELS

    templates = sorted((REPO / ".dvc" / "plots").glob("*.json"))
    assert [t.stem for t in templates] == ["models_bars", "models_linear", "models_scatter"]
    for template in templates:
        text = template.read_text()
        for info in MODELS.values():
            assert f"'{info.name}'" in text and f'"{info.label}"' in text, (template.name, info.name)
