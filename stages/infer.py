#!/usr/bin/env python
"""Stage infer: a mask and a panel for every image of a folder, at each image's own size.

    python stages/infer.py                                   # pipeline: infer.* params, raw test images
    python stages/infer.py --model models/unet/best.pt --input DIR --output DIR
    python stages/infer.py --model resnet34_unet --input photos/ --trimaps annotations/trimaps/

--model is a checkpoint file or a model name (models/<name>/best.pt). Without
--input, infer.input_dir is used; when that is null, the images listed in the
raw data's annotations/test.txt. Without --output: predictions/<model>.
Unreadable files are skipped with a message; no readable image at all is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petseg.cli import run_stage, stage_params  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--model", default=None, help="checkpoint file or model name (default: infer.model)")
    parser.add_argument("--input", default=None,
                        help="folder of images (default: infer.input_dir, else the raw test images)")
    parser.add_argument("--output", default=None, help="output folder (default: predictions/<model>)")
    parser.add_argument("--trimaps", default=None,
                        help="folder of <name>.png trimaps for the ground truth "
                        "(default: annotations/trimaps beside the input folder)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability threshold (default: infer.threshold)")
    parser.add_argument("--raw", default="data/raw/oxford-iiit-pet",
                        help="raw data folder (default: data/raw/oxford-iiit-pet)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()

    params = stage_params(args.params)
    section = params["infer"]
    threshold = section["threshold"] if args.threshold is None else args.threshold
    if not 0.0 < threshold < 1.0:
        parser.error(f"--threshold {threshold} is invalid; allowed: a number > 0 and < 1")
    from petseg.inference import infer_folder

    model = args.model or section["model"]
    output = args.output
    if output is None and args.model is None:
        output = f"predictions/{section['model']}"
    infer_folder(
        model,
        args.input if args.input is not None else section["input_dir"],
        output,
        threshold=threshold,
        trimaps_dir=args.trimaps,
        raw_dir=args.raw,
        device=args.device,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    run_stage(main)
