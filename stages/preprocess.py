"""Stage preprocess: data/raw/oxford-iiit-pet -> data/cache (resized uint8 arrays per split + report.json).

python -m stages.preprocess
"""

from __future__ import annotations

import argparse

from petseg import paths
from petseg.cli import run_stage, stage_params, stage_parser


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument("--raw-dir", default=str(paths.RAW_DIR), help="the raw layout (the download stage's output)")
    parser.add_argument("--cache-dir", default=str(paths.CACHE_DIR), help="where the cache goes (a DVC output)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    params = stage_params(args.params)
    data = params.data
    from petseg.data.preprocess import preprocess

    result = preprocess(
        args.raw_dir,
        args.cache_dir,
        image_size=data.image_size,
        split=data.split,
        val_every=data.val_every,
        split_fractions=data.split_fractions,
        seed=data.seed,
        workers=params.preprocess.workers,
        jpeg_draft=params.preprocess.jpeg_draft,
    )
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
