"""Stage compare, and comparisons against other commits and experiments, with 95% intervals.

    python -m stages.compare                         # metrics/compare.json: UNet minus ResNet34-UNet, paired
    python stages/compare.py --against HEAD~1        # each model here minus the same model at a revision
    python stages/compare.py --against my-exp        # ... or at a DVC experiment
    python stages/compare.py --experiments           # mean and spread of dice_mean over experiments (seed study)

Differences are paired over test images: the mean, a 95% bootstrap interval and
a Wilcoxon p-value; an interval containing 0 is called no detectable change.
Exit code 1 when REV lacks the tables or its test images differ from these.
"""

from __future__ import annotations

from petseg import paths
from petseg.cli import run_stage, stage_params, stage_parser
from petseg.models import MODEL_NAMES


def main() -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--against", metavar="REV", help="a git revision or DVC experiment name to compare with")
    parser.add_argument("--experiments", nargs="*", metavar="NAME", help="summarize these experiments (default: all)")
    parser.add_argument(
        "--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="models (default: all)"
    )
    parser.add_argument(
        "--evaluate", default=str(paths.EVALUATE_DIR), help="per-image tables (default: plots/evaluate)"
    )
    parser.add_argument(
        "--out", default=str(paths.COMPARE_FILE), help="the stage's output (default: metrics/compare.json)"
    )
    args = parser.parse_args()
    stage_params(args.params)  # reads no params, but a broken params file stops the pipeline
    from petseg.compare import compare_against, compare_models, summarize_runs

    if args.against is not None:
        lines, same_images = compare_against(args.against, args.models, evaluate_dir=args.evaluate)
        print("\n".join(lines))
        return 0 if same_images else 1
    if args.experiments is not None:
        print("\n".join(summarize_runs(args.experiments, args.models)))
        return 0
    compare_models(*MODEL_NAMES[:2], evaluate_dir=args.evaluate, out=args.out)
    return 0


if __name__ == "__main__":
    run_stage(main)
