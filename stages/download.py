"""Stage download: put the raw dataset in data/raw/oxford-iiit-pet (official archives or synthetic).

python -m stages.download        # data.source: synthetic (generated) or oxford-iiit-pet (downloaded)
"""

from __future__ import annotations

import argparse

from petseg import paths
from petseg.cli import run_stage, stage_params, stage_parser


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument("--raw-dir", default=str(paths.RAW_DIR), help="where the raw layout goes (a DVC output)")
    parser.add_argument(
        "--downloads-dir",
        default=str(paths.DOWNLOADS_DIR),
        help="where archives are kept so valid ones are not fetched again",
    )
    parser.add_argument("--workers", type=int, default=0, help="processes for synthetic generation (0 = one per core)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    data = stage_params(args.params).data
    from petseg.data.download import prepare_raw

    prepare_raw(data, args.raw_dir, args.downloads_dir, workers=args.workers)


if __name__ == "__main__":
    run_stage(main)
