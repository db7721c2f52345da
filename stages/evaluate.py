#!/usr/bin/env python
"""Stage evaluate: score each model's best checkpoint on the test cache.

    python stages/evaluate.py                       # both models
    python stages/evaluate.py --models unet         # one model; other sections of the metrics file are kept

Writes metrics/evaluate.json (one section per model), plots/evaluate/<model>.csv
(per-image name,dice,iou) and plots/evaluate/<model>_worst.png (the evaluate.n_worst
worst test images). Per-image Dice: sigmoid(logit) > evaluate.threshold, then
2|P∩G| / (|P| + |G|); both empty scores 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petseg.cli import run_stage, stage_params  # noqa: E402
from petseg.params import MODEL_NAMES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                        help="models to evaluate (default: all)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--cache", default="data/cache", help="tensor cache folder (default: data/cache)")
    parser.add_argument("--models-dir", default="models", help="folder holding <model>/best.pt (default: models)")
    parser.add_argument("--metrics", default="metrics/evaluate.json",
                        help="metrics file (default: metrics/evaluate.json)")
    parser.add_argument("--plots", default="plots/evaluate",
                        help="per-image tables and galleries (default: plots/evaluate)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    args = parser.parse_args()

    params = stage_params(args.params)
    from petseg.evaluation import EvaluateConfig, evaluate_models

    evaluate_models(
        list(dict.fromkeys(args.models)),
        EvaluateConfig.from_params(params["evaluate"]),
        cache_dir=args.cache,
        models_dir=args.models_dir,
        metrics_path=args.metrics,
        plots_dir=args.plots,
        device=args.device,
    )


if __name__ == "__main__":
    run_stage(main)
