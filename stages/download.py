"""Stage download: put the raw dataset in data/raw/oxford-iiit-pet (official archives or synthetic)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petseg.cli import run_stage, stage_params  # noqa: E402
from petseg.data.download import prepare_raw  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--raw-dir", default="data/raw/oxford-iiit-pet", help="where the raw layout goes (a DVC output)"
    )
    parser.add_argument(
        "--downloads-dir", default="data/downloads", help="where archives are kept so valid ones are not fetched again"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="processes for synthetic generation (0 = one per CPU core)"
    )
    args = parser.parse_args()
    data = stage_params(args.params)["data"]
    prepare_raw(
        data["source"],
        args.raw_dir,
        args.downloads_dir,
        images_urls=data["images_url"],
        images_md5=data["images_md5"],
        annotations_urls=data["annotations_url"],
        annotations_md5=data["annotations_md5"],
        n_trainval=data["synthetic"]["n_trainval"],
        n_test=data["synthetic"]["n_test"],
        seed=data["seed"],
        workers=args.workers,
    )


if __name__ == "__main__":
    run_stage(main)
