"""Stage train_<model> (the registry's train_stage): train one registered model from the tensor cache.

    python -m stages.train unet            # models/unet/{best,last}.pt, dvclive/unet/
    python -m stages.train resnet34_unet   # models/resnet34_unet/..., dvclive/resnet34_unet/

Continues an interrupted run from its last completed epoch when the params and
the cached data are unchanged; otherwise starts over and says why. With
``train.nproc_per_node`` = N > 1 it starts itself again on N processes through
torchrun's launcher and trains with DistributedDataParallel (see petseg.distributed).
"""

from __future__ import annotations

import argparse
import sys

from petseg import paths
from petseg.cli import run_stage, stage_params, stage_parser
from petseg.models import MODEL_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument("model", choices=MODEL_NAMES)
    parser.add_argument("--cache", default=str(paths.CACHE_DIR), help="tensor cache folder (default: data/cache)")
    parser.add_argument("--out", default=None, help="checkpoint folder (default: models/<model>)")
    parser.add_argument("--live", default=None, help="DVCLive folder (default: dvclive/<model>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    params = stage_params(args.params)
    from petseg.distributed import env_rank, relaunch_under_torchrun

    script = __spec__.name if __spec__ is not None else __file__  # relaunched the way it was started
    if relaunch_under_torchrun(params.train.nproc_per_node, script, sys.argv[1:], module=__spec__ is not None):
        return
    from petseg.training import fit

    try:
        fit(
            args.model,
            params.models.section(args.model),
            params.train,
            args.cache,
            args.out or paths.checkpoint_dir(args.model),
            args.live or paths.live_dir(args.model),
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        if env_rank() != 0:
            sys.exit(130)  # Ctrl-C reaches every process; rank 0 says it once
        raise


if __name__ == "__main__":
    run_stage(main)
