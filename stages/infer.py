"""Stage infer: a mask and a panel for every image of a folder, at each image's own size.

    python -m stages.infer                                   # pipeline: infer.* params, raw test images
    python -m stages.infer --model models/unet/best.pt --input DIR --output DIR [--tta] [--postprocess largest]
    python -m stages.infer --model resnet34_unet --input photos/ --trimaps annotations/trimaps/

--model is a checkpoint file or a model name (models/<name>/best.pt). Without
--input, infer.input_dir is used; when that is null, the images listed in the
raw data's annotations/test.txt. Without --output: predictions/<model>.
Unreadable files are skipped with a message; no readable image at all is an error.
"""

from __future__ import annotations

import argparse

from petseg import paths
from petseg.cli import DEVICE_HELP, run_stage, stage_params, stage_parser
from petseg.params import POSTPROCESS


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", default=None, help="checkpoint file or model name (default: infer.model)")
    parser.add_argument(
        "--input", default=None, help="folder of images (default: infer.input_dir, else the raw test images)"
    )
    parser.add_argument("--output", default=None, help="output folder (default: predictions/<model>)")
    parser.add_argument(
        "--trimaps",
        default=None,
        help="folder of <name>.png trimaps for the ground truth (default: annotations/trimaps beside the input folder)",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="probability threshold (default: infer.threshold)"
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip test-time augmentation (default: infer.tta)",
    )
    parser.add_argument(
        "--postprocess",
        choices=POSTPROCESS,
        default=None,
        help="largest: keep the largest pet region and fill its holes (default: infer.postprocess)",
    )
    parser.add_argument("--raw", default=str(paths.RAW_DIR), help="raw data folder (default: data/raw/oxford-iiit-pet)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    params = stage_params(args.params)
    section = params.infer
    threshold = section.threshold if args.threshold is None else args.threshold
    if not 0.0 < threshold < 1.0:
        parser.error(f"--threshold {threshold} is invalid; allowed: a number > 0 and < 1")
    from petseg.inference import infer_folder

    output = args.output
    pipeline = output is None and args.model is None  # the pipeline's own run: its DVC output, rebuilt whole
    if pipeline:
        output = paths.predictions_dir(section.model)
    infer_folder(
        args.model or section.model,
        args.input if args.input is not None else section.input_dir,
        output,
        threshold=threshold,
        tta=section.tta if args.tta is None else args.tta,
        postprocess=section.postprocess if args.postprocess is None else args.postprocess,
        jpeg_draft=params.preprocess.jpeg_draft,
        trimaps_dir=args.trimaps,
        raw_dir=args.raw,
        device=args.device,
        progress=not args.no_progress,
        rebuild=pipeline,
    )


if __name__ == "__main__":
    run_stage(main)
