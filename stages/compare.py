"""Stage compare, and comparisons against other commits, experiments and seed studies, with 95% intervals.

    python -m stages.compare                      # metrics/compare.json: UNet minus each other model, one run
    python -m stages.compare --table              # the models' metrics side by side (add --against REV)
    python -m stages.compare --against HEAD~1     # each model here minus the same model at a revision or experiment
    python -m stages.compare --experiments        # seed study: this commit's experiments and the workspace
    python -m stages.compare --experiments --by train.lr --json FILE   # each model between recipes
    python -m stages.compare --experiments --metrics seeds.json   # flat numbers: dvc metrics show seeds.json
    python -m stages.compare --experiments --smallest-effect 0.01  # seeds per side that a difference of 0.01 needs

A paired interval over test images covers one training run per side and is
never called detectable; with seeds (dvc exp run --queue -S 'train.seed=0,1,2')
the interval covers seeds and test images, and only it can be. Exit code 1 when
REV lacks the tables or its test images differ from these.
"""

from __future__ import annotations

import argparse

from petseg import paths
from petseg.cli import run_stage, stage_params, stage_parser
from petseg.models import MODEL_NAMES

STUDY_OPTIONS = ("by", "json", "metrics", "smallest_effect", "plots")  # they go with --experiments (and --rev)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument("--against", metavar="REV", help="a git revision or DVC experiment name to compare with")
    parser.add_argument(
        "--experiments", nargs="*", metavar="NAME", help="seed study of these experiments (default: all)"
    )
    parser.add_argument("--by", metavar="KEY", help="with --experiments: compare the groups that differ in this param")
    parser.add_argument("--json", metavar="FILE", help="with --experiments: write the numbers to FILE")
    parser.add_argument(
        "--metrics", metavar="FILE", help="with --experiments: the study as flat numbers for dvc metrics show FILE"
    )
    parser.add_argument(
        "--smallest-effect",
        type=float,
        metavar="DELTA",
        help="with --experiments: how many seeds per side a difference of DELTA needs, from this study's spreads",
    )
    parser.add_argument(
        "--plots",
        metavar="DIR",
        help="with --experiments: the study's pictures (PNG) and their data for dvc plots show, in DIR",
    )
    parser.add_argument(
        "--rev", default="HEAD", help="with --experiments: the commit whose experiments (default: HEAD)"
    )
    parser.add_argument("--table", action="store_true", help="the metrics of the models side by side")
    parser.add_argument(
        "--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="the first is the reference"
    )
    parser.add_argument(
        "--evaluate", default=str(paths.EVALUATE_DIR), help="per-image tables (default: plots/evaluate)"
    )
    parser.add_argument(
        "--out", default=str(paths.COMPARE_FILE), help="the stage's output (default: metrics/compare.json)"
    )
    return parser


def write_plots(out_dir: str, groups: list, report: dict, models: list[str]) -> list[str]:
    """``--plots DIR``: the study's numbers (petseg.compare) drawn (petseg.plotting); lines saying what was written."""
    from petseg.compare.curves import BAND, band_rows, image_rows
    from petseg.plotting.study import plot_ids, write_study

    shared = [m for m in models if all(m in group.models() for group in groups)]
    bands, notes = band_rows(groups, shared)
    written = write_study(
        out_dir, models=shared, differences=report["differences"], bands=bands, images=image_rows(groups, shared),
        band=BAND,
    )  # fmt: skip
    return [
        *(f"note: {note}" for note in notes),
        f"plots: wrote {len(written)} files to {out_dir} (curves.png, forest.png, images.png and their data)",
        f"dvc plots show {' '.join(plot_ids(out_dir))} -o {out_dir}/page   # the charts in a browser",
    ]


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.experiments is None and (args.rev != "HEAD" or any(getattr(args, o) is not None for o in STUDY_OPTIONS)):
        parser.error("--by, --json, --metrics, --smallest-effect, --plots and --rev go with --experiments")
    stage_params(args.params)  # reads no params, but a broken params file stops the pipeline
    from petseg.compare import compare_against, compare_models, compare_seeds, write_report

    if args.table:
        from petseg.compare.table import metrics_table

        print(metrics_table(args.models, against=args.against))
        return 0
    if args.against is not None:
        lines, same_images = compare_against(args.against, args.models, evaluate_dir=args.evaluate)
        print("\n".join(lines))
        return 0 if same_images else 1
    if args.experiments is not None:
        from petseg.compare.run import seed_study

        study = seed_study(args.models, by=args.by, names=args.experiments, rev=args.rev)
        lines, report = compare_seeds(args.models, by=args.by, smallest_effect=args.smallest_effect, study=study)
        print("\n".join(lines))
        if args.plots:
            print("\n".join(write_plots(args.plots, study[1], report, args.models)))
        if args.json:
            write_report(args.json, report)
        if args.metrics:
            from petseg.compare.seeds import metrics_summary

            write_report(args.metrics, metrics_summary(report))
        return 0
    compare_models(args.models, evaluate_dir=args.evaluate, out=args.out)
    return 0


if __name__ == "__main__":
    run_stage(main)
