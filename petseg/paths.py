"""Where the pipeline keeps things: the one source of every default path of dvc.yaml's stages.

Stage scripts take these as their defaults; the library takes paths as
arguments, so tests and users can point it anywhere.
"""

from __future__ import annotations

from pathlib import Path

from petseg.errors import CheckpointError
from petseg.models.registry import model_info

RAW_DIR = Path("data/raw/oxford-iiit-pet")  # the official layout (petseg.data.layout)
DOWNLOADS_DIR = Path("data/downloads")  # archives, kept so that valid ones are not fetched again
CACHE_DIR = Path("data/cache")  # the tensor cache (petseg.data.cache)
MODELS_DIR = Path("models")  # models/<model>/best.pt and last.pt
LIVE_DIR = Path("dvclive")  # dvclive/<model>/: per-epoch training logs
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
EVALUATE_DIR = PLOTS_DIR / "evaluate"  # per-image and per-breed tables, the worst images' masks
GALLERY_DIR = PLOTS_DIR / "gallery"  # <model>_worst.png: the worst test images (plot stage)
PLOT_DATA_DIR = PLOTS_DIR / "data"  # the charts' data, every model in one table per chart (plot stage)
PREDICTIONS_DIR = Path("predictions")  # predictions/<model>/


def checkpoint_dir(model: str, models_dir: str | Path = MODELS_DIR) -> Path:
    return Path(models_dir) / model


def best_checkpoint(model: str, models_dir: str | Path = MODELS_DIR) -> Path:
    """``models/<model>/best.pt``, which must exist; when missing, the error names the stage that makes it."""
    path = checkpoint_dir(model, models_dir) / "best.pt"
    if not path.is_file():
        stage = model_info(model).train_stage
        raise CheckpointError(f"{path}: checkpoint not found; the {stage} stage makes it (dvc repro {stage})")
    return path


def live_dir(model: str, live_root: str | Path = LIVE_DIR) -> Path:
    return Path(live_root) / model


def per_image_table(model: str, evaluate_dir: str | Path = EVALUATE_DIR) -> Path:
    return Path(evaluate_dir) / f"{model}.csv"


def worst_masks(model: str, evaluate_dir: str | Path = EVALUATE_DIR) -> Path:
    return Path(evaluate_dir) / f"{model}_worst.npy"


def gallery(model: str, gallery_dir: str | Path = GALLERY_DIR) -> Path:
    return Path(gallery_dir) / f"{model}_worst.png"


def predictions_dir(model: str) -> Path:
    return PREDICTIONS_DIR / model


def breed_table(model: str, evaluate_dir: str | Path = EVALUATE_DIR) -> Path:
    return Path(evaluate_dir) / f"{model}_by_breed.csv"


def metrics_file(model: str, metrics_dir: str | Path = METRICS_DIR) -> Path:
    """``metrics/<model>.json``: one model's test figures."""
    return Path(metrics_dir) / f"{model}.json"


COMPARE_FILE = METRICS_DIR / "compare.json"  # the paired comparison of the models
