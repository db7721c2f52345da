"""The Vega-Lite templates of a seed study's charts for ``dvc plots show`` (written to ``DIR/templates/``).

No template names a model: each mark takes its registry colour from the data's ``colour`` column as it is
(a colour scale built from the data does not work inside a facet), and each panel its label from the
data; ``position`` keeps the panels in the registry's order. DVC puts the rows where ``<DVC_METRIC_DATA>``
stands, and the title and axis label of ``DIR/dvc.yaml`` where theirs stand.
"""

from __future__ import annotations

from typing import Any

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
DATA = {"values": "<DVC_METRIC_DATA>"}
COLOUR = {"field": "colour", "type": "nominal", "scale": None, "legend": None}
_EPOCH = {"field": "epoch", "type": "quantitative", "title": "epoch", "axis": {"tickMinStep": 1}}
_HEADER = {"labelFontSize": 13, "labelFontWeight": "bold"}


def _facet(field: str, channel: str = "column") -> dict[str, Any]:
    return {channel: {"field": field, "type": "nominal", "title": None, "header": _HEADER,
                      "sort": {"field": "position", "op": "min"}}}  # fmt: skip


BAND: dict[str, Any] = {
    "$schema": SCHEMA,
    "description": "petseg seed study: per model (a column), each recipe's mean over seeds per epoch (dash "
    "style) and a shaded band between the rows' low and high (the title says which)",
    "data": DATA,
    "title": "<DVC_METRIC_TITLE>",
    "facet": _facet("model"),
    "spec": {
        "width": 380,
        "height": 260,
        "layer": [
            {
                "mark": {"type": "area", "opacity": 0.18},
                "encoding": {
                    "x": _EPOCH,
                    "y": {"field": "low", "type": "quantitative", "scale": {"zero": False},
                          "title": "<DVC_METRIC_Y_LABEL>"},
                    "y2": {"field": "high"},
                    "color": COLOUR,
                    "detail": {"field": "recipe", "type": "nominal"},
                },
            },
            {
                "mark": {"type": "line", "point": True, "strokeWidth": 2.5, "tooltip": {"content": "data"}},
                "encoding": {
                    "x": _EPOCH,
                    "y": {"field": "mean", "type": "quantitative", "scale": {"zero": False},
                          "title": "<DVC_METRIC_Y_LABEL>"},
                    "color": COLOUR,
                    "strokeDash": {"field": "recipe", "type": "nominal", "sort": None,
                                   "title": "recipe (seeds): the mean",
                                   "legend": {"symbolType": "stroke", "symbolSize": 500, "labelLimit": 400,
                                              # the symbols' stroke set here: with the data's colours as they
                                              # are, the legend has no colour of its own
                                              "encode": {"symbols": {"update": {"stroke": {"value": "black"},
                                                                                "strokeWidth": {"value": 2},
                                                                                "opacity": {"value": 1}}}}}},
                },
            },
        ],
    },
}  # fmt: skip

_ROW = {"field": "row", "type": "nominal", "title": None, "sort": {"field": "order", "op": "min"},
        "axis": {"labelLimit": 400, "labelFontSize": 12}}  # fmt: skip
_TEXT_X = {"value": 430}  # pixels: the numbers and the verdict beside the axis (width 420)

FOREST: dict[str, Any] = {
    "$schema": SCHEMA,
    "description": "petseg seed study: one row per difference of the report, its 95% interval (thick), the "
    "adjusted interval where there is one (thin), +- the minimum detectable effect (grey), 0 (dashed); "
    "beside it the numbers and the verdict",
    "data": DATA,
    "title": {"text": "<DVC_METRIC_TITLE>",
              "subtitle": "dot: difference; thick: 95% interval; thin: interval adjusted for several comparisons "
                          "(where there is one); grey: \u00b1 the minimum detectable effect (MDE); dashed: 0"},
    "facet": {"row": {"field": "panel", "type": "nominal", "title": None, "sort": {"field": "order", "op": "min"},
                      "header": {**_HEADER, "labelAngle": 0, "labelAlign": "left", "labelOrient": "top",
                                 "labelAnchor": "start"}}},
    "resolve": {"scale": {"y": "independent", "x": "independent"}},
    "spec": {
        "width": 420,
        "height": {"step": 46},
        "layer": [
            {
                "transform": [{"filter": "isValid(datum.mde)"}, {"calculate": "-datum.mde", "as": "mde_low"}],
                "mark": {"type": "bar", "color": "#d9d9d9", "height": 16},
                "encoding": {"y": _ROW, "x": {"field": "mde_low", "type": "quantitative"}, "x2": {"field": "mde"}},
            },
            {
                "mark": {"type": "rule", "strokeDash": [4, 3], "color": "black"},
                "encoding": {"x": {"datum": 0, "type": "quantitative"}},
            },
            {
                "transform": [{"filter": "isValid(datum.ci_adjusted_low)"}],
                "mark": {"type": "rule", "strokeWidth": 1.5},
                "encoding": {"y": _ROW, "x": {"field": "ci_adjusted_low", "type": "quantitative"},
                             "x2": {"field": "ci_adjusted_high"}, "color": COLOUR},
            },
            {
                "mark": {"type": "rule", "strokeWidth": 6},
                "encoding": {"y": _ROW, "x": {"field": "ci95_low", "type": "quantitative",
                                              "title": "difference: the dot, its 95% interval (thick)"},
                             "x2": {"field": "ci95_high"}, "color": COLOUR},
            },
            {
                "mark": {"type": "point", "filled": True, "size": 110, "opacity": 1, "stroke": "black",
                         "strokeWidth": 1, "tooltip": {"content": "data"}},
                "encoding": {"y": _ROW, "x": {"field": "diff", "type": "quantitative"}, "color": COLOUR},
            },
            {
                "mark": {"type": "text", "align": "left", "dy": -8, "fontSize": 12},
                "encoding": {"y": _ROW, "x": _TEXT_X, "text": {"field": "numbers"}},
            },
            {
                "mark": {"type": "text", "align": "left", "dy": 9, "fontSize": 12, "fontStyle": "italic"},
                "encoding": {"y": _ROW, "x": _TEXT_X, "text": {"field": "verdict_words"},
                             "color": {"condition": {"test": "datum.detectable", "value": "#1a7f37"},
                                       "value": "#404040"}},
            },
        ],
    },
    "config": {"view": {"stroke": None}},
}  # fmt: skip

_AXIS = {"type": "quantitative", "scale": {"zero": False}}

IMAGES: dict[str, Any] = {
    "$schema": SCHEMA,
    "description": "petseg seed study: per test image, the first model's Dice against another's, averaged over "
    "seeds, each point in the colour of the model that scores higher; the diagonal; the largest disagreements "
    "named",
    "data": DATA,
    "title": {"text": "<DVC_METRIC_TITLE>",
              "subtitle": "each point a test image, in the colour of the model with the higher Dice; dashed: equal"},
    "facet": _facet("pair"),
    "spec": {
        "width": 380,
        "height": 380,
        "layer": [
            {
                "mark": {"type": "rule", "strokeDash": [4, 3], "color": "grey"},
                "encoding": {"x": {"field": "lowest", **_AXIS}, "y": {"field": "lowest", **_AXIS},
                             "x2": {"field": "highest"}, "y2": {"field": "highest"}},
            },
            {
                "mark": {"type": "circle", "size": 45, "opacity": 0.9, "tooltip": {"content": "data"}},
                "encoding": {
                    "x": {"field": "b_dice", **_AXIS, "title": "the pair's second model: test Dice, mean over seeds"},
                    "y": {"field": "a_dice", **_AXIS, "title": "the pair's first model: test Dice, mean over seeds"},
                    "color": COLOUR,
                },
            },
            {
                "transform": [{"filter": "datum.named != ''"}],
                "mark": {"type": "point", "size": 140, "color": "black", "strokeWidth": 1.2},
                "encoding": {"x": {"field": "b_dice", **_AXIS}, "y": {"field": "a_dice", **_AXIS}},
            },
            {
                "transform": [{"filter": "datum.named != ''"}],
                "mark": {"type": "text", "align": "left", "dx": 9, "dy": -4, "fontSize": 11},
                "encoding": {"x": {"field": "b_dice", **_AXIS}, "y": {"field": "a_dice", **_AXIS},
                             "text": {"field": "named"}},
            },
        ],
    },
}  # fmt: skip

TEMPLATES = {"band": BAND, "forest": FOREST, "images": IMAGES}
