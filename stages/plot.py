"""Stage plot: training curves, test Dice and the worst test images of every registered model.

    python -m stages.plot        # plots/*.png, plots/data/*.csv (for dvc plots), plots/gallery/<model>_worst.png

Reads dvclive/<model>/plots/metrics/*.tsv (train stages), plots/evaluate/ (evaluate
stage) and the test cache. Each model in its registry colour and label; train
dashed, validation solid; epochs numbered from 1.
"""

from __future__ import annotations

import argparse

from petseg import paths
from petseg.cli import run_stage, stage_params, stage_parser
from petseg.models import MODEL_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="models to plot (default: all)"
    )
    parser.add_argument("--live", default=str(paths.LIVE_DIR), help="DVCLive root holding <model>/ (default: dvclive)")
    parser.add_argument(
        "--evaluate",
        default=str(paths.EVALUATE_DIR),
        help="the evaluate stage's tables and masks (default: plots/evaluate)",
    )
    parser.add_argument("--cache", default=str(paths.CACHE_DIR), help="tensor cache folder (default: data/cache)")
    parser.add_argument("--out", default=str(paths.PLOTS_DIR), help="output folder (default: plots)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    stage_params(args.params)  # the plot stage reads no params, but a broken params file still stops the pipeline
    from petseg.plotting import plot_all

    plot_all(
        list(dict.fromkeys(args.models)),
        live_root=args.live,
        evaluate_dir=args.evaluate,
        cache_dir=args.cache,
        out_dir=args.out,
    )


if __name__ == "__main__":
    run_stage(main)
