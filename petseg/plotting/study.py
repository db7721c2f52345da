"""A seed study's pictures and their data: learning curves with seed bands, a forest plot, a per-image scatter.

``python -m stages.compare --experiments --plots DIR`` reads the study once and computes its numbers in
petseg.compare; :func:`write_study` draws them as they are, never recomputing an interval:

- ``curves.png``: per model (a column, in its registry colour), validation Dice and training loss per
  epoch, one line per recipe at the mean over its seeds, a shaded band between the rows' ``low`` and
  ``high`` (what they are is the ``band`` argument, in the legend), the seed count in the label;
- ``forest.png``: one row per difference, per metric (petseg.plotting.forest);
- ``images.png``: for the first recipe, each test image's Dice of the first model against each other
  model's, averaged over seeds, the diagonal, the images where the two disagree most named.

Beside them, the same numbers for ``dvc plots show``: ``curves_val_dice.csv``, ``curves_train_loss.csv``,
``forest.json`` (the report's differences, each with its drawing fields), ``images.csv``; their Vega-Lite
templates in ``templates/``; and ``dvc.yaml``, whose ``plots:`` section names them (plot ids
``<DIR>/val_dice``, ``<DIR>/train_loss``, ``<DIR>/forest``, ``<DIR>/images``; DVC reads it when DIR is
inside the project). Every model is drawn with its registry label and colour (petseg.plotting.figures).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petseg.evaluation.tables import csv_text
from petseg.io import write_json, write_text
from petseg.plotting.figures import DPI, Style, model_styles, pyplot, save
from petseg.plotting.forest import MINUS, difference_numbers, forest_rows, plot_forest
from petseg.plotting.study_vega import TEMPLATES

CURVES = {"val_dice": "validation Dice (mean per image)", "train_loss": "training loss"}
PNGS = ("curves.png", "forest.png", "images.png")
NAMED = 5  # images named in the scatter: those where the two models disagree most
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
HATCHES = ("", "////", "\\\\\\\\", "xxxx")  # the first recipe's band filled, the others' hatched


def _number(value: Any) -> str:
    return "" if value is None else repr(float(value))


def _group_label(name: str, seeds: int) -> str:
    return f"{name} ({seeds} seed{'s' if seeds != 1 else ''})"


# ------------------------------------------------ curves


def _curve_groups(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(row["group"] for row in rows))


def plot_curves(
    path: str | Path, bands: Sequence[dict[str, Any]], models: Sequence[str], styles: dict[str, Style], band: str
) -> list[str]:
    """Validation Dice (top) and training loss (bottom) per epoch, a column per model; returns the legend labels."""
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    groups = _curve_groups(bands)
    fig, axes = plt.subplots(len(CURVES), len(models), figsize=(4.8 * len(models) + 0.4, 8.0), dpi=DPI, squeeze=False)
    labels: list[str] = []
    for column, model in enumerate(models):
        style = styles[model]
        for line, (metric, ylabel) in enumerate(CURVES.items()):
            axis = axes[line][column]
            handles, texts = [], []
            for k, group in enumerate(groups):
                rows = [r for r in bands if r["model"] == model and r["metric"] == metric and r["group"] == group]
                if not rows:
                    continue
                epochs = np.array([r["epoch"] for r in rows])
                mean = np.array([r["mean"] for r in rows])
                low, high = np.array([r["low"] for r in rows]), np.array([r["high"] for r in rows])
                dash, marker = LINESTYLES[k % len(LINESTYLES)], MARKERS[k % len(MARKERS)]
                hatch = HATCHES[k % len(HATCHES)]
                shade = axis.fill_between(
                    epochs, low, high, facecolor=style.colour if not hatch else "none", alpha=0.2 if not hatch else 0.5,
                    edgecolor=style.colour, hatch=hatch, linewidth=0,
                )  # fmt: skip
                if len(epochs) == 1:  # one epoch: the band as a capped bar, the recipes side by side
                    epochs = epochs + 0.12 * (k - (len(groups) - 1) / 2)
                    axis.errorbar(epochs, mean, yerr=[mean - low, high - mean], fmt="none", ecolor=style.colour,
                                  elinewidth=6, alpha=0.35, capsize=0)  # fmt: skip
                (mean_line,) = axis.plot(
                    epochs, mean, color=style.colour, linestyle=dash, marker=marker, markersize=4, linewidth=2
                )
                handles.append((shade, mean_line))
                texts.append(f"{_group_label(group, rows[0]['seeds'])}")
            labels += texts
            last = max((r["epoch"] for r in bands if r["model"] == model and r["metric"] == metric), default=1)
            axis.set_xlim(0.5, last + 0.5)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
            axis.set_xlabel("epoch")
            axis.set_ylabel(ylabel)
            axis.grid(True, alpha=0.3)
            if line == 0:
                axis.set_title(style.label, color=style.colour, fontweight="bold")
            if handles:
                axis.legend(
                    handles, texts, handler_map={tuple: HandlerTuple(ndivide=None)}, fontsize=7.5,
                    title=f"line: mean; shaded: {band}", title_fontsize=7.5,
                    loc="lower right" if metric == "val_dice" else "upper right",
                )  # fmt: skip
            else:
                axis.text(0.5, 0.5, "no DVCLive log in these runs", ha="center", transform=axis.transAxes)
    fig.suptitle(f"Learning curves over seeds: per recipe, the mean (line) and the {band} (shaded)")
    fig.tight_layout()
    save(fig, path)
    return labels


def image_pairs(images: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((row["a"], row["b"]) for row in images))


def plot_images(
    path: str | Path,
    images: Sequence[dict[str, Any]],
    styles: dict[str, Style],
    differences: Sequence[dict[str, Any]],
    named: int = NAMED,
) -> list[str]:
    """Per test image, the first model's Dice (y) against another's (x), averaged over seeds, a panel per pair,
    each point in the colour of the model that scores higher; the ``named`` largest disagreements numbered and
    listed under the panel. Returns the names listed."""
    plt = pyplot()
    pairs = image_pairs(images)
    n = max(1, len(pairs))
    fig, axes = plt.subplots(1, n, figsize=(6.0 * n, 7.6), dpi=DPI, squeeze=False)
    names: list[str] = []
    for axis, (a, b) in zip(axes[0], pairs):
        rows = [r for r in images if r["a"] == a and r["b"] == b]
        x, y = np.array([r["b_dice"] for r in rows]), np.array([r["a_dice"] for r in rows])
        low = max(0.0, math.floor(min(x.min(), y.min()) * 20) / 20)
        axis.plot([low, 1.0], [low, 1.0], color="0.4", linestyle="--", linewidth=1, zorder=1)
        for model, mask, where in ((a, y > x, (0.03, 0.97)), (b, y < x, (0.97, 0.03))):
            style = styles[model]
            axis.scatter(x[mask], y[mask], s=22, color=style.colour, zorder=2, edgecolors="none")
            axis.annotate(
                f"{style.label} higher: {int(mask.sum())} images", xy=where, xycoords="axes fraction",
                ha="left" if where[0] < 0.5 else "right", va="top" if where[1] > 0.5 else "bottom",
                color=style.colour, fontweight="bold", fontsize=9,
            )  # fmt: skip
        ties = x == y
        if ties.any():
            axis.scatter(x[ties], y[ties], s=22, color="0.5", zorder=2, edgecolors="none")
        listed = []
        for row in [r for r in sorted(rows, key=lambda r: r["rank"]) if r["diff"] != 0][:named]:
            axis.scatter([row["b_dice"]], [row["a_dice"]], s=70, facecolors="none", edgecolors="black", zorder=3)
            axis.annotate(str(row["rank"]), xy=(row["b_dice"], row["a_dice"]), xytext=(5, 4),
                          textcoords="offset points", fontsize=8, fontweight="bold", zorder=3)  # fmt: skip
            listed.append(
                f"{row['rank']}. {row['image']}: {styles[a].label} {row['a_dice']:.3f}, "
                f"{styles[b].label} {row['b_dice']:.3f} ({row['diff']:+.3f})"
            )
            names.append(row["image"])
        seeds = rows[0]["n_seeds"]
        axis.set_xlim(low, 1.0)
        axis.set_ylim(low, 1.0)
        axis.set_aspect("equal")
        over = f"test Dice (mean over {seeds} seed{'s' if seeds != 1 else ''})"
        axis.set_xlabel(f"{styles[b].label}: {over}", color=styles[b].colour, fontweight="bold")
        axis.set_ylabel(f"{styles[a].label}: {over}", color=styles[a].colour, fontweight="bold")
        axis.grid(True, alpha=0.3)
        title = f"{styles[a].label} vs {styles[b].label}: {len(rows)} test images ({rows[0]['group']})"
        record = next(
            (d for d in differences if d.get("model") is None and (d["a"], d["b"]) == (a, b)
             and d["metric"] == "dice_mean" and d.get("group") == rows[0]["group"]),
            None,
        )  # fmt: skip
        if record is not None:
            title += f"\n{styles[a].label} {MINUS} {styles[b].label}: {difference_numbers(record)}"
        axis.set_title(title, fontsize=9)
        listing = "\n".join(listed) or "none: equal on every image"
        axis.text(0.0, -0.13, f"largest disagreements (circled):\n{listing}", transform=axis.transAxes, va="top",
                  fontsize=8, family="monospace")  # fmt: skip
    fig.suptitle("Per-image test Dice, averaged over seeds (dashed: equal)")
    fig.subplots_adjust(left=0.1, right=0.97, top=0.86, bottom=0.27, wspace=0.3)
    save(fig, path)
    return names


# ------------------------------------------------ the data DVC renders


def _band_table(bands: Sequence[dict[str, Any]], metric: str, styles: dict[str, Style]) -> str:
    order = list(styles)
    rows = [
        [r["epoch"], styles[r["model"]].label, styles[r["model"]].colour, order.index(r["model"]),
         _group_label(r["group"], r["seeds"]), r["seeds"], r["n_seeds"], _number(r["mean"]), _number(r["low"]),
         _number(r["high"]), _number(r["sd"])]
        for r in bands
        if r["metric"] == metric
    ]  # fmt: skip
    header = ("epoch", "model", "colour", "position", "recipe", "seeds", "n_seeds", "mean", "low", "high", "sd")
    return csv_text(rows, header)


def _image_table(images: Sequence[dict[str, Any]], styles: dict[str, Style], named: int) -> str:
    pairs = image_pairs(images)
    ends = {
        pair: (min(min(r["a_dice"], r["b_dice"]) for r in images if (r["a"], r["b"]) == pair),
               max(max(r["a_dice"], r["b_dice"]) for r in images if (r["a"], r["b"]) == pair))
        for pair in pairs
    }  # fmt: skip
    rows = []
    for r in images:
        a, b = styles[r["a"]], styles[r["b"]]
        higher = a if r["diff"] > 0 else b if r["diff"] < 0 else None
        rows.append(
            [f"{a.label} (y) vs {b.label} (x)", pairs.index((r["a"], r["b"])), r["image"], a.label, b.label,
             _number(r["a_dice"]), _number(r["b_dice"]), _number(r["diff"]), r["rank"],
             r["image"] if r["rank"] <= named and r["diff"] != 0 else "", higher.label if higher else "equal",
             higher.colour if higher else "#808080", r["n_seeds"], *map(_number, ends[(r["a"], r["b"])])]
        )  # fmt: skip
    header = ("pair", "position", "image", "a", "b", "a_dice", "b_dice", "diff", "rank", "named", "higher", "colour",
              "n_seeds", "lowest", "highest")  # fmt: skip
    return csv_text(rows, header)


def plot_ids(out_dir: str | Path, root: str | Path = ".") -> list[str]:
    """The plot ids of ``DIR/dvc.yaml``, for ``dvc plots show`` (DIR from the project root ``root``)."""
    return [f"{_where(Path(out_dir), Path(root))}/{name}" for name in ("val_dice", "train_loss", "forest", "images")]


def _where(out_dir: Path, root: Path) -> str:
    try:
        return out_dir.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # outside the project: DVC does not read it, but the paths still name it
        return out_dir.resolve().as_posix()


def _dvc_yaml(out_dir: Path, root: Path, band: str) -> str:
    """``DIR/dvc.yaml``: a ``plots:`` section, data paths from DIR, template paths from the project root."""
    where = _where(out_dir, root)
    ids = plot_ids(out_dir, root)
    template = {name: f"{where}/templates/{name}.json" for name in TEMPLATES}
    plots = [
        {ids[0]: {"template": template["band"], "x": "epoch", "y": {"curves_val_dice.csv": "mean"},
                  "title": f"Validation Dice per epoch: mean over seeds, band {band}",
                  "y_label": "validation Dice (mean per image)"}},
        {ids[1]: {"template": template["band"], "x": "epoch", "y": {"curves_train_loss.csv": "mean"},
                  "title": f"Training loss per epoch: mean over seeds, band {band}", "y_label": "training loss"}},
        {ids[2]: {"template": template["forest"], "x": "diff", "y": {"forest.json": "row"},
                  "title": "Differences over seeds and test images"}},
        {ids[3]: {"template": template["images"], "x": "b_dice", "y": {"images.csv": "a_dice"},
                  "title": "Per-image test Dice averaged over seeds"}},
    ]  # fmt: skip
    head = (
        "# Written by python -m stages.compare --experiments --plots: a seed study's charts for DVC, shown by\n"
        f"# dvc plots show {' '.join(ids)} -o {where}/page\n"
    )
    return head + json.dumps({"plots": plots}, indent=2, ensure_ascii=False) + "\n"  # JSON is YAML


def write_study(
    out_dir: str | Path,
    *,
    models: Sequence[str],
    differences: Sequence[dict[str, Any]],
    bands: Sequence[dict[str, Any]],
    images: Sequence[dict[str, Any]],
    band: str,
    named: int = NAMED,
    root: str | Path = ".",
) -> list[Path]:
    """Draw the study's three PNGs and write their data, templates and ``dvc.yaml`` to ``out_dir``.

    ``differences`` are the report's (``--json``), ``bands`` and ``images`` petseg.compare.curves' rows;
    ``band`` says what the rows' low and high are; ``root`` is the project root (DVC's template paths).
    Returns the files written.
    """
    out_dir = Path(out_dir)
    styles = model_styles(models)
    forest = forest_rows(differences, styles)
    written = [out_dir / name for name in PNGS]
    plot_curves(written[0], bands, models, styles, band)
    plot_forest(written[1], forest)
    plot_images(written[2], images, styles, differences, named)
    for metric in CURVES:
        written.append(out_dir / f"curves_{metric}.csv")
        write_text(written[-1], _band_table(bands, metric, styles))
    written.append(out_dir / "forest.json")
    write_json(written[-1], forest)
    written.append(out_dir / "images.csv")
    write_text(written[-1], _image_table(images, styles, named))
    for name, template in TEMPLATES.items():
        written.append(out_dir / "templates" / f"{name}.json")
        write_json(written[-1], template)
    written.append(out_dir / "dvc.yaml")
    write_text(written[-1], _dvc_yaml(out_dir, Path(root), band))
    return written
