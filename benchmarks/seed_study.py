"""A seed study kept as a result file: every run's per-image tables, so its verdicts recompute from the file.

    python benchmarks/seed_study.py record --repo ../study --out benchmarks/studies/real_seeds.json \\
        --experiments NAME ... --wall-seconds 5400 --command "dvc exp run --queue -S 'train.seed=0,1,2,3,4'"
    python benchmarks/seed_study.py report benchmarks/studies/real_seeds.json            # the study's report
    python benchmarks/seed_study.py report benchmarks/studies/real_seeds.json --json out.json

``record`` reads a project's seed study as ``python -m stages.compare --experiments`` does
(petseg.compare.run.seed_study: commit ``--rev``'s own run, its DVC experiments and the
workspace, or the experiments named), and writes one JSON file: the machine (CPU, torch's CPU
capability, torch, the precision each run's ``train.precision`` resolves to here), the date,
the commands that made the study, its wall time, each run's label, seed, code hashes, flattened
params and each model's per-image table (names, breeds, species and every score column), and,
at the top level (``groups``, ``differences``, ``by``), the ``--json`` report of the code that
recorded it.

``report`` rebuilds the runs (petseg.compare.runs.Run, petseg.evaluation.tables.PerImage) from
the stored tables, groups them by recipe (petseg.compare.runs.group_runs) and prints what
``python -m stages.compare --experiments`` prints on them, computed by the current code
(petseg.compare.run.compare_seeds, which calls petseg.compare.seeds.seed_report); ``--json``
writes its numbers as ``stages.compare --json`` does. Run on a file, it recomputes the verdicts
of a study with today's statistics, without training again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from default_run import machine

from petseg.cli import run_stage
from petseg.compare.run import compare_seeds, seed_study, write_report
from petseg.compare.runs import SEED_KEY, Run, group_runs
from petseg.errors import DataError
from petseg.evaluation.tables import PerImage
from petseg.io import write_json
from petseg.models import MODEL_NAMES
from petseg.precision import resolve_precision

FORMAT = 1  # the layout of ``runs`` in the file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="subcommand", required=True)
    record = commands.add_parser("record", help="read a project's seed study and write it, tables and all, to FILE")
    record.add_argument("--repo", type=Path, default=Path("."), help="the project (default: here)")
    record.add_argument("--out", type=Path, required=True, help="the result file (JSON)")
    record.add_argument(
        "--experiments", nargs="*", metavar="NAME", help="these experiments only (default: as stages.compare)"
    )
    record.add_argument("--rev", default="HEAD", help="the commit whose experiments (default: HEAD)")
    record.add_argument(
        "--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="the first is the reference"
    )
    record.add_argument("--by", metavar="KEY", help="the report's --by (default: none)")
    record.add_argument("--note", default="", help="what the study is, in a sentence")
    record.add_argument("--wall-seconds", type=float, help="the study's wall time (queue start to end)")
    record.add_argument(
        "--command", action="append", default=[], metavar="LINE", help="a command line that made the study (repeat)"
    )
    report = commands.add_parser("report", help="the seed study report of a recorded file, by the current code")
    report.add_argument("file", type=Path, help="a file written by record")
    report.add_argument("--json", metavar="OUT", help="write the report's numbers to OUT (as stages.compare --json)")
    report.add_argument("--by", metavar="KEY", help="compare the groups that differ in KEY (default: the file's)")
    report.add_argument("--smallest-effect", type=float, metavar="DELTA", help="seeds per side DELTA needs")
    return parser


def table_record(table: PerImage) -> dict[str, Any]:
    """One model's per-image table as JSON (floats exactly: JSON writes Python floats by repr)."""
    return {
        "names": list(table.names),
        "breeds": list(table.breeds),
        "species": list(table.species),
        "scores": {key: [float(v) for v in values] for key, values in table.scores.items()},
    }


def table_from_record(entry: dict[str, Any], where: str) -> PerImage:
    """The PerImage of :func:`table_record`; a DataError naming ``where`` when it is not one."""
    try:
        names = [str(name) for name in entry["names"]]
        scores = {str(key): np.asarray(values, dtype=np.float64) for key, values in entry["scores"].items()}
        breeds, species = list(entry.get("breeds") or []), list(entry.get("species") or [])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: not a per-image table ({exc!r})") from None
    if "dice" not in scores or any(len(values) != len(names) for values in scores.values()):
        raise DataError(f"{where}: a per-image table needs a dice column and one score per name")
    return PerImage(names, scores, breeds or [None] * len(names), species or [None] * len(names))


def run_record(run: Run) -> dict[str, Any]:
    return {
        "label": run.label,
        "seed": run.seed,
        "code": run.code,
        "params": run.params,
        "tables": {model: table_record(table) for model, table in run.tables.items()},
    }


def run_from_record(entry: dict[str, Any], where: str) -> Run:
    try:
        label, params, tables, code = entry["label"], entry["params"], entry["tables"], entry.get("code", "")
    except (KeyError, TypeError) as exc:
        raise DataError(f"{where}: not a recorded run ({exc!r})") from None
    if not isinstance(params, dict) or not isinstance(tables, dict) or not tables:
        raise DataError(f"{where}: a recorded run needs params and at least one table")
    return Run(
        str(label),
        dict(params),
        {model: table_from_record(table, f"{where}, {model}") for model, table in tables.items()},
        code=str(code),
    )


def precisions(runs: Sequence[Run]) -> dict[str, dict[str, str]]:
    """What each run's ``train.precision`` (and ``train.device``) resolves to on this machine, and why."""
    found = {}
    for run in runs:
        requested, device = run.params.get("train.precision", "auto"), run.params.get("train.device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        resolved = resolve_precision(str(requested), torch.device(str(device)))
        found[f"train.precision={requested}, train.device={run.params.get('train.device')}"] = {
            "used": resolved.name,
            "reason": resolved.reason,
        }
    return found


def study_record(
    runs: Sequence[Run],
    models: Sequence[str],
    *,
    by: str | None = None,
    note: str = "",
    commands: Sequence[str] = (),
    wall_seconds: float | None = None,
    commit: str | None = None,
) -> dict[str, Any]:
    """The result file's content: how the study was made, its runs' tables, and today's report on them."""
    runs = list(runs)
    _, report = compare_seeds(models, by=by, study=(runs, group_runs(runs, by)))
    return {
        "note": note,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {**machine(), "precision": precisions(runs)},
        "commands": list(commands),
        "wall_seconds": wall_seconds,
        "models": list(models),
        "format": FORMAT,
        "runs": [run_record(run) for run in runs],
        **json.loads(json.dumps(report, default=str)),  # groups, differences, by: as stages.compare --json
    }


def load_study(path: Path) -> tuple[list[Run], list[str], str | None]:
    """The runs, models and ``by`` of a recorded file; a DataError naming the file when it is not one."""
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable seed study file ({exc})") from None
    if not isinstance(study, dict) or not isinstance(study.get("runs"), list) or not study["runs"]:
        raise DataError(f"{path}: no runs recorded (write it with: python benchmarks/seed_study.py record ...)")
    runs = [run_from_record(entry, f"{path}, run {i}") for i, entry in enumerate(study["runs"])]
    models = study.get("models") or list(runs[0].tables)
    return runs, [str(m) for m in models], study.get("by")


def record(args: argparse.Namespace) -> None:
    runs, _ = seed_study(args.models, by=args.by, names=args.experiments, rev=args.rev, repo=args.repo)
    commit = subprocess.run(
        ["git", "rev-parse", args.rev], cwd=args.repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    commands = [*args.command, shlex.join(["python", *sys.argv])]
    study = study_record(
        runs, args.models, by=args.by, note=args.note, commands=commands, wall_seconds=args.wall_seconds, commit=commit
    )
    write_json(args.out, study)
    seeds = ", ".join(f"{run.label} ({SEED_KEY} {run.seed})" for run in runs)
    print(f"{args.out}: {len(runs)} run(s): {seeds}")


def report(args: argparse.Namespace) -> None:
    runs, models, by = load_study(args.file)
    by = args.by if args.by is not None else by
    lines, numbers = compare_seeds(
        models, by=by, smallest_effect=args.smallest_effect, study=(runs, group_runs(runs, by))
    )
    print("\n".join(lines))
    if args.json:
        write_report(args.json, numbers)


def main() -> int:
    args = build_parser().parse_args()
    if args.subcommand == "record":
        record(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    run_stage(main)  # a bad file or repository: one line naming it, exit code 1
