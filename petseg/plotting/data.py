"""The charts' data for ``dvc plots show``: one table per chart, every model in it, in ``plots/data/``.

Each row names its model by its label (column ``model``) and carries its colour
and line width, so that the templates in ``.dvc/plots/`` label and colour the
series from the data: dvc.yaml names one file per chart, however many models
there are. Epochs are numbered from 1; floats are written with ``repr``.

- ``val_dice.csv``, ``train_dice.csv``, ``loss.csv`` (both splits), ``lr.csv``:
  ``epoch,model,colour,width,split,<value>``;
- ``test_dice.csv``: ``image,model,colour,width,dice`` (image: position in the test cache);
- ``dice_by_breed.csv``: ``breed,model,colour,width,dice_mean``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petseg.evaluation.tables import csv_text
from petseg.io import write_text
from petseg.plotting.figures import Style
from petseg.training.log import Series

SPLITS = {"train": "train", "val": "validation"}
# chart table -> (the DVCLive metrics it holds, its value column)
CURVES = {
    "val_dice": (("val/dice",), "dice"),
    "train_dice": (("train/dice",), "dice"),
    "loss": (("train/loss", "val/loss"), "loss"),
    "lr": (("lr",), "lr"),
}
TABLES = (*CURVES, "test_dice", "dice_by_breed")  # the tables write_tables writes: what tests check it against


def _model(style: Style) -> list[object]:
    return [style.label, style.colour, style.width]


def _number(value: object) -> str:
    return repr(float(value))  # type: ignore[arg-type]


def write_chart_data(
    out_dir: str | Path,
    styles: dict[str, Style],
    logs: dict[str, dict[str, Series]],
    scores: dict[str, np.ndarray],
    breeds: dict[str, list[dict[str, object]]],
) -> list[Path]:
    """Write one table per chart (TABLES) to ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    written = []
    for name, (metrics, column) in CURVES.items():
        rows = [
            [int(epoch), *_model(styles[model]), SPLITS.get(metric.split("/")[0], "all"), _number(value)]
            for model, series in logs.items()
            for metric in metrics
            for epoch, value in zip(series[metric].epochs, series[metric].values)
        ]
        written.append(out_dir / f"{name}.csv")
        write_text(written[-1], csv_text(rows, ("epoch", "model", "colour", "width", "split", column)))
    rows = [[i, *_model(styles[model]), _number(v)] for model, dice in scores.items() for i, v in enumerate(dice)]
    written.append(out_dir / "test_dice.csv")
    write_text(written[-1], csv_text(rows, ("image", "model", "colour", "width", "dice")))
    rows = [
        [row["breed"], *_model(styles[model]), _number(row["dice_mean"])]
        for model, model_rows in breeds.items()
        for row in model_rows
    ]
    written.append(out_dir / "dice_by_breed.csv")
    write_text(written[-1], csv_text(rows, ("breed", "model", "colour", "width", "dice_mean")))
    return written
