#!/usr/bin/env python
"""Stage train_unet / train_resnet: train one model from the tensor cache.

    python stages/train.py unet            # models/unet/{best,last}.pt, dvclive/unet/
    python stages/train.py resnet34_unet   # models/resnet34_unet/..., dvclive/resnet34_unet/

Continues an interrupted run from its last completed epoch when the params and
the cached data are unchanged; otherwise starts over and says why.

With ``train.nproc_per_node`` = N > 1 the script starts itself again on N
processes of this machine through torchrun's launcher (``--standalone``) and
trains with DistributedDataParallel, so the dvc.yaml cmd never changes. Started
by torchrun itself (for example on several nodes), it trains as one of the
processes torchrun made and ignores ``train.nproc_per_node``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petseg.cli import run_stage, stage_params  # noqa: E402
from petseg.distributed import env_rank, launch_local, under_torchrun  # noqa: E402
from petseg.params import MODEL_NAMES  # noqa: E402

log = logging.getLogger("petseg")


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
    nproc = params["train"]["nproc_per_node"]
    if not under_torchrun():
        if nproc > 1:
            log.info("train: starting %d processes (train.nproc_per_node) with torchrun", nproc)
            launch_local(nproc, Path(__file__).resolve(), sys.argv[1:])
            return
    elif env_rank() != 0:
        log.setLevel(logging.WARNING)  # rank 0 reports for all
    elif int(os.environ.get("LOCAL_WORLD_SIZE", nproc)) != nproc:
        log.info("train: torchrun started %s processes per node; train.nproc_per_node = %d is not used",
                 os.environ["LOCAL_WORLD_SIZE"], nproc)
    from petseg.training import TrainConfig, fit

    try:
        fit(
            args.model,
            params["models"][args.model],
            TrainConfig.from_params(params["train"]),
            cache_dir=args.cache,
            out_dir=args.out or f"models/{args.model}",
            live_dir=args.live or f"dvclive/{args.model}",
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        if env_rank() != 0:
            sys.exit(130)  # Ctrl-C reaches every process; rank 0 says it once
        raise


if __name__ == "__main__":
    run_stage(main)
