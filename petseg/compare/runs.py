"""Training runs as replicates: one commit's own run, its DVC experiments and the workspace, grouped by recipe.

A run is what one ``dvc repro`` or ``dvc exp run`` left in git: its params.yaml and
each model's per-image table (``plots/evaluate/<model>.csv``). Runs whose params
agree on everything but ``train.seed`` are one recipe (a :class:`Group`); their
seeds are the replicates from which training noise is measured. Runs are read
from git (``git show``), never checked out; the workspace is read from disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petseg import paths
from petseg.compare.revisions import NotAtRevision, experiments_of, read_text_at, resolve
from petseg.errors import DataError
from petseg.evaluation.tables import PerImage, parse_per_image_csv
from petseg.io import parse_yaml

SEED_KEY = "train.seed"
PARAMS_FILE = Path("params.yaml")
LOCK_FILE = Path("dvc.lock")
CODE_DIRS = ("petseg", "stages")  # dvc.lock deps under these are code: a change there is another recipe


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested params as ``section.key`` -> value (lists stay values)."""
    if not isinstance(values, dict):
        return {prefix: values} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _parse_params(text: str, source: str) -> dict[str, Any]:
    return flatten(parse_yaml(text, source) or {})


def lock_stages(text: str, source: str) -> dict[str, dict[str, Any]]:
    """The stages of a dvc.lock (name -> entry); one that does not parse or is not a dvc.lock: a DataError naming it."""
    values = parse_yaml(text, source)
    if values is None:  # an empty file: no stages locked
        return {}
    stages = values.get("stages", {}) if isinstance(values, dict) else None
    if not isinstance(stages, dict) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("deps") or [], list)
        and all(isinstance(dep, dict) and "path" in dep for dep in entry.get("deps") or [])
        for entry in stages.values()
    ):
        raise DataError(
            f"{source}: not a dvc.lock (a mapping of stages, each with a list of deps with paths); "
            "restore it from git or re-run dvc repro"
        )
    return stages


def code_hashes(lock_text: str | None, source: str = str(LOCK_FILE)) -> str:
    """The hashes dvc.lock records for the stages' code deps, as a key ("" without a dvc.lock or code deps).

    A dvc.lock that does not parse is a DataError naming ``source``: read as "no code", it would pool runs of
    different code into one recipe.
    """
    if lock_text is None:
        return ""
    code = {
        dep["path"]: dep.get("md5") or dep.get("hash")
        for entry in lock_stages(lock_text, source).values()
        for dep in entry.get("deps") or []
        if str(dep["path"]).split("/", 1)[0] in CODE_DIRS
    }
    return hashlib.sha1(json.dumps(code, sort_keys=True).encode()).hexdigest()[:8] if code else ""


@dataclass(frozen=True)
class Run:
    """One training run: where it was read from, its params (flattened) and each model's per-image table."""

    label: str
    params: dict[str, Any]
    tables: dict[str, PerImage]
    texts: tuple[str, ...] = field(repr=False, default=())  # what identifies it (params and tables as written)
    code: str = ""  # the code's hashes in its dvc.lock (code_hashes)
    # reads another of its files (a path from the repository root) as the run left it: its DVCLive logs
    read: Callable[[Path], str] | None = field(repr=False, compare=False, default=None)

    @property
    def seed(self) -> Any:
        return self.params.get(SEED_KEY)

    def recipe(self, ignore: Sequence[str] = ()) -> str:
        """Its params but the seed (and ``ignore``), as a key."""
        kept = {k: v for k, v in self.params.items() if k != SEED_KEY and k not in ignore}
        return json.dumps([kept, self.code], sort_keys=True, default=str)


def _read_run(label: str, models: Sequence[str], read: Any) -> Run | None:
    """A run from a reader ``read(path) -> text``; None when it holds no per-image table of the models."""
    params_text = read(PARAMS_FILE)
    texts, tables = [params_text], {}
    for model in models:
        path = paths.per_image_table(model)
        try:
            text = read(path)
        except NotAtRevision:
            continue
        tables[model] = parse_per_image_csv(text, f"{path} at {label}")
        texts.append(text)
    if not tables:
        return None
    try:
        lock_text = read(LOCK_FILE)
    except NotAtRevision:  # a run without a dvc.lock: its code is not known
        lock_text = None
    code = code_hashes(lock_text, f"{LOCK_FILE} at {label}")
    return Run(label, _parse_params(params_text, f"params.yaml at {label}"), tables, tuple(texts), code, read)


def _workspace_reader(repo: Path) -> Any:
    def read(path: Path) -> str:
        try:
            return (repo / path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotAtRevision(f"{path}: not found in the workspace") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read it in the workspace ({exc})") from None

    return read


def read_runs(models: Sequence[str], *, rev: str = "HEAD", repo: str | Path = ".", workspace: bool = True) -> list[Run]:
    """The commit ``rev``'s own run, then its experiments (by name), then the workspace when it differs from all.

    A run read twice (the workspace after ``dvc exp run`` holds the last experiment's results) counts once.
    """
    repo = Path(repo)
    sha = resolve(rev, repo)
    found: list[Run | None] = [_read_run(rev, models, lambda path: read_text_at(sha, path, repo))]
    for name, exp_sha in experiments_of(sha, repo):
        found.append(_read_run(name, models, lambda path, s=exp_sha: read_text_at(s, path, repo)))
    if workspace:
        found.append(_read_run("workspace", models, _workspace_reader(repo)))
    runs: list[Run] = []
    for run in found:
        if run is not None and all(run.texts != kept.texts for kept in runs):
            runs.append(run)
    return runs


@dataclass(frozen=True)
class Group:
    """The runs of one recipe: every param equal but ``train.seed``."""

    name: str
    runs: tuple[Run, ...]

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.runs]

    def models(self) -> list[str]:
        """The models every run of the group evaluated, in registry order."""
        first = list(self.runs[0].tables)
        return [m for m in first if all(m in run.tables for run in self.runs)]

    def scores(self, model: str, score: str) -> np.ndarray:
        """Runs x test images, in one order of images for every run; a DataError when the test sets differ."""
        reference = self.runs[0].tables[model]
        rows = []
        for run in self.runs:
            table = run.tables[model]
            if table.names != reference.names:
                raise DataError(
                    f"{model}: the test images of {run.label} differ from those of {self.runs[0].label} "
                    f"({len(table.names)} vs {len(reference.names)} images): evaluate every run on one test set"
                )
            if score not in table.scores:
                raise DataError(f"{model}: {run.label}'s per-image table has no {score} column; re-run evaluate there")
            rows.append(table.scores[score])
        return np.vstack(rows)


def _describe(keys: Sequence[str], run: Run, code_differs: bool) -> str:
    named = [f"{key}={_value(run.params.get(key))}" for key in keys]
    if code_differs:
        named.append(f"code {run.code or 'unlocked'}")
    return ", ".join(named) or "all runs"


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def group_runs(runs: Sequence[Run], by: str | None = None) -> list[Group]:
    """Runs grouped by every param but ``train.seed``, in the order first seen; named by the params that differ.

    With ``by``, every group must differ in that param only: runs that differ in others are a DataError.
    """
    if by is not None:
        if by == SEED_KEY:
            raise DataError(f"--by {SEED_KEY}: seeds are the replicates within a group; compare by another param")
        missing = [run.label for run in runs if by not in run.params]
        if missing:
            raise DataError(f"--by {by}: no such param in params.yaml of {', '.join(missing)}")
        recipes = {run.recipe(ignore=[by]) for run in runs}
        if len(recipes) > 1:
            raise DataError(
                f"--by {by}: the runs differ in other params or code too; "
                f"compare runs that differ in {by} (and the seed) only"
            )
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        grouped.setdefault(run.recipe(), []).append(run)
    keys = sorted({key for run in runs for key in run.params if key != SEED_KEY})
    differing = [k for k in keys if len({json.dumps(r.params.get(k), default=str) for r in runs}) > 1]
    if by is not None:
        differing = [by]
    code_differs = len({run.code for run in runs}) > 1
    return [Group(_describe(differing, members[0], code_differs), tuple(members)) for members in grouped.values()]
