"""A seed study's forest plot: one row per difference of the report, its interval, MDE and verdict.

The rows are the report's ``differences`` as they are (petseg.compare.seeds), with what drawing them takes
(:func:`forest_rows`); :func:`plot_forest` draws them, a panel per metric, never recomputing an interval: the
point, its 95% interval (thick), the interval adjusted for several comparisons where the report has one (thin,
capped), a zero line, the band of +- the minimum detectable effect (grey), and beside it the numbers and the
verdict's words. petseg.plotting.study writes them with the study's other pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from petseg.plotting.figures import DPI, Style, pyplot, save

METRIC_NAMES = {"dice_mean": "Dice (mean per image)", "boundary_iou_mean": "Boundary IoU (mean per image)"}
MINUS = "\u2212"


def difference_label(record: dict[str, Any], styles: dict[str, Style], several_groups: bool) -> str:
    """What a difference is, in words: "UNet − ResNet34-UNet", per group when there are several."""
    name = {m: s.label for m, s in styles.items()}
    if record.get("model") is None:
        text = f"{name.get(record['a'], record['a'])} {MINUS} {name.get(record['b'], record['b'])}"
        return f"{text} ({record['group']})" if several_groups and record.get("group") else text
    return f"{name.get(record['model'], record['model'])}: {record['a']} {MINUS} {record['b']}"


def verdict_words(record: dict[str, Any]) -> str:
    """The report's verdict; where the report has none, its words from ``detectable`` and the noise covered."""
    if record.get("verdict"):
        words = str(record["verdict"])
    elif not record.get("includes_training_noise"):
        words = "one seed a side: test images only, not training noise"
    else:
        words = "detectable" if record.get("detectable") else "no detectable difference"
    if record.get("includes_training_noise") is False and "seed" not in words:
        words += " (one seed a side: training noise not included)"
    return words


def difference_numbers(record: dict[str, Any]) -> str:
    """The row's numbers as the report has them: difference, interval, adjusted interval, MDE, P(improvement)."""
    text = f"{record['diff']:+.4f} [{record['ci95_low']:+.4f}, {record['ci95_high']:+.4f}]"
    if record.get("ci_adjusted_low") is not None and record.get("ci_adjusted_high") is not None:
        text += f", adjusted [{record['ci_adjusted_low']:+.4f}, {record['ci_adjusted_high']:+.4f}]"
    if record.get("mde") is not None:
        text += f", MDE {record['mde']:.4f}"
    if record.get("p_improvement") is not None:
        text += f", P(improvement) {record['p_improvement']:.2f}"
        if record.get("p_improvement_low") is not None and record.get("p_improvement_high") is not None:
            text += f" [{record['p_improvement_low']:.2f}, {record['p_improvement_high']:.2f}]"
    if record.get("n_seeds_a") is not None:
        text += f"; {record['n_seeds_a']} vs {record['n_seeds_b']} seeds"
    return text


def forest_rows(differences: Sequence[dict[str, Any]], styles: dict[str, Style]) -> list[dict[str, Any]]:
    """The report's differences, each as it is, with what drawing it takes: ``row`` (its words), ``panel`` (the
    metric's name), ``colour`` (the compared model's), ``numbers``, ``verdict_words`` and ``order`` (its position
    on the chart: metric by metric, in the report's order within each)."""
    several = len({r.get("group") for r in differences if r.get("model") is None}) > 1
    metrics = list(dict.fromkeys(r["metric"] for r in differences))
    order = sorted(range(len(differences)), key=lambda i: (metrics.index(differences[i]["metric"]), i))
    keys = list(dict.fromkeys(key for record in differences for key in record))  # DVC takes rows of equal keys
    rows = []
    for i, record in enumerate(differences):
        model = record["model"] if record.get("model") is not None else record["b"]
        rows.append(
            {
                **{key: record.get(key) for key in keys},
                "row": difference_label(record, styles, several),
                "panel": METRIC_NAMES.get(record["metric"], record["metric"]),
                "colour": styles[model].colour if model in styles else "#444444",
                "numbers": difference_numbers(record),
                "verdict_words": verdict_words(record),
                "order": order.index(i),
            }
        )
    return rows


def plot_forest(path: str | Path, rows: Sequence[dict[str, Any]]) -> list[str]:
    """One row per difference (``forest_rows``), a panel per metric; returns the rows' words in drawing order."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    ordered = sorted(rows, key=lambda r: r["order"])
    panels = list(dict.fromkeys(row["panel"] for row in ordered))
    per_panel = {p: [r for r in ordered if r["panel"] == p] for p in panels}
    # inches: the row labels, the axes, the numbers and words beside them
    left = 0.3 + 0.072 * max((len(r["row"]) for r in rows), default=10)
    text_width = 0.4 + 0.068 * max((max(len(r["numbers"]), len(r["verdict_words"])) for r in rows), default=40)
    width, axes_width = left + 4.2 + text_width, 4.2
    heights = [0.58 * len(items) + 0.9 for items in per_panel.values()]
    top, bottom = 0.75, 0.25
    height = top + sum(heights) + bottom
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    drawn: list[str] = []
    adjusted_any = any(r.get("ci_adjusted_low") is not None for r in rows)
    mde_any = any(r.get("mde") is not None for r in rows)
    y0 = height - top
    for panel, panel_height in zip(panels, heights):
        items = per_panel[panel]
        box = (left / width, (y0 - panel_height + 0.55) / height, axes_width / width, (panel_height - 0.9) / height)
        axis = fig.add_axes(box)
        y0 -= panel_height
        ends = [0.0]
        for y, row in enumerate(items):
            colour = row["colour"]
            if row.get("mde") is not None:
                mde = float(row["mde"])
                axis.fill_betweenx([y - 0.3, y + 0.3], -mde, mde, color="0.86", linewidth=0, zorder=1)
                ends += [-mde, mde]
            if row.get("ci_adjusted_low") is not None and row.get("ci_adjusted_high") is not None:
                low, high = float(row["ci_adjusted_low"]), float(row["ci_adjusted_high"])
                axis.errorbar(
                    [row["diff"]], [y], xerr=[[row["diff"] - low], [high - row["diff"]]], fmt="none",
                    ecolor=colour, elinewidth=1.2, capsize=5, zorder=2,
                )  # fmt: skip
                ends += [low, high]
            axis.plot([row["ci95_low"], row["ci95_high"]], [y, y], color=colour, linewidth=4, zorder=3,
                      solid_capstyle="butt")  # fmt: skip
            axis.plot([row["diff"]], [y], marker="o", markersize=9, color=colour, markeredgecolor="black", zorder=4)
            ends += [row["ci95_low"], row["ci95_high"], row["diff"]]
            detectable = bool(row.get("detectable"))
            axis.annotate(row["numbers"], xy=(1.03, y - 0.12), xycoords=("axes fraction", "data"), va="center",
                          fontsize=8.5, color="0.1")  # fmt: skip
            axis.annotate(
                row["verdict_words"], xy=(1.03, y + 0.2), xycoords=("axes fraction", "data"), va="center",
                fontsize=8.5, style="italic", color="#1a7f37" if detectable else "0.35",
                fontweight="bold" if detectable else "normal",
            )  # fmt: skip
            drawn.append(row["row"])
        axis.axvline(0.0, color="black", linestyle="--", linewidth=1, zorder=0)
        span = max(abs(v) for v in ends) or 0.01
        axis.set_xlim(-1.12 * span, 1.12 * span)
        axis.xaxis.set_major_locator(MaxNLocator(nbins=6, symmetric=True))
        axis.set_ylim(len(items) - 0.5, -0.5)
        axis.set_yticks(range(len(items)), [r["row"] for r in items], fontsize=9)
        axis.set_xlabel(f"difference in {panel}", fontsize=9)
        axis.set_title(panel, loc="left", fontsize=10, fontweight="bold")
        axis.grid(True, axis="x", alpha=0.3)
    key = ["dot: difference", "thick: 95% interval"]
    if adjusted_any:
        key.append("thin, capped: interval adjusted for several comparisons")
    if mde_any:
        key.append("grey: \u00b1 the minimum detectable effect (MDE)")
    key.append("dashed: 0")
    fig.text(0.01, 1 - 0.22 / height, "Differences over seeds and test images", fontsize=11, fontweight="bold",
             va="top")  # fmt: skip
    fig.text(0.01, 1 - 0.48 / height, "; ".join(key), fontsize=8.5, va="top", color="0.25")
    save(fig, path)
    return drawn


# ------------------------------------------------ per-image scatter
