#!/usr/bin/env python
"""Stage train_unet / train_resnet: train one model from the tensor cache.

    python stages/train.py unet            # models/unet/{best,last}.pt, dvclive/unet/
    python stages/train.py resnet34_unet   # models/resnet34_unet/..., dvclive/resnet34_unet/

Continues an interrupted run from its last completed epoch when the params and
the cached data are unchanged; otherwise starts over and says why.
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
    parser.add_argument("model", choices=MODEL_NAMES)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--cache", default="data/cache", help="tensor cache folder (default: data/cache)")
    parser.add_argument("--out", default=None, help="checkpoint folder (default: models/<model>)")
    parser.add_argument("--live", default=None, help="DVCLive folder (default: dvclive/<model>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()

    params = stage_params(args.params)
    from petseg.training import TrainConfig, fit

    fit(
        args.model,
        params["models"][args.model],
        TrainConfig.from_params(params["train"]),
        cache_dir=args.cache,
        out_dir=args.out or f"models/{args.model}",
        live_dir=args.live or f"dvclive/{args.model}",
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    run_stage(main)
