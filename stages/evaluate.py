"""Stage evaluate: score each model's best checkpoint on the test cache, in exact float32.

    python -m stages.evaluate                       # every registered model
    python -m stages.evaluate --models unet         # one model (the other models' files are left as they are)

Writes, per model: metrics/<model>.json (the same keys for every model),
plots/evaluate/<model>.csv (per-image scores), <model>_by_breed.csv and
<model>_worst.npy (the masks of the evaluate.n_worst worst test images, which
the plot stage draws). Per-image Dice:
sigmoid(logit) > evaluate.threshold, then 2|P∩G| / (|P| + |G|); both empty scores 1.
"""

from __future__ import annotations

import argparse

from petseg import paths
from petseg.cli import DEVICE_HELP, run_stage, stage_params, stage_parser
from petseg.models import MODEL_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="models to evaluate (default: all)"
    )
    parser.add_argument("--cache", default=str(paths.CACHE_DIR), help="tensor cache folder (default: data/cache)")
    parser.add_argument(
        "--models-dir", default=str(paths.MODELS_DIR), help="folder of <model>/best.pt (default: models)"
    )
    parser.add_argument("--metrics", default=str(paths.METRICS_DIR), help="folder of <model>.json (default: metrics)")
    parser.add_argument(
        "--plots", default=str(paths.EVALUATE_DIR), help="tables and worst masks (default: plots/evaluate)"
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    params = stage_params(args.params)
    from petseg.evaluation import evaluate_models

    evaluate_models(
        list(dict.fromkeys(args.models)),
        params.evaluate,
        cache_dir=args.cache,
        models_dir=args.models_dir,
        metrics_dir=args.metrics,
        plots_dir=args.plots,
        device=args.device,
    )


if __name__ == "__main__":
    run_stage(main)
