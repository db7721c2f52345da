"""Stage preprocess: data/raw/oxford-iiit-pet -> data/cache (resized uint8 arrays per split + report.json)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petseg.cli import run_stage, stage_params  # noqa: E402
from petseg.data.preprocess import preprocess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--raw-dir", default="data/raw/oxford-iiit-pet", help="the raw layout (the download stage's output)"
    )
    parser.add_argument("--cache-dir", default="data/cache", help="where the cache goes (a DVC output)")
    args = parser.parse_args()
    params = stage_params(args.params)
    data, options = params["data"], params["preprocess"]
    result = preprocess(
        args.raw_dir,
        args.cache_dir,
        image_size=data["image_size"],
        split=data["split"],
        val_every=data["val_every"],
        split_fractions=data["split_fractions"],
        seed=data["seed"],
        workers=options["workers"],
        jpeg_draft=options["jpeg_draft"],
    )
    print(result.summary())


if __name__ == "__main__":
    run_stage(main)
