"""Files as they are at another git revision or DVC experiment (read from git, never checked out).

A revision is anything ``git rev-parse`` understands (``HEAD~1``, a branch, a tag,
a sha) or the name of a DVC experiment (its ref under ``refs/exps/``; when
several experiments share the name, the one based on the current commit).
Only git-tracked files are read this way: the metrics and tables petseg keeps
in git (``cache: false`` outputs), not DVC-cached data.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from petseg.errors import DataError

EXPERIMENT_REFS = "refs/exps/"
# DVC keeps each experiment's commit under refs/exps/<baseline sha[:2]>/<baseline sha[2:]>/<name>, beside refs
# of its own (refs/exps/stash, refs/exps/exec/..., refs/exps/celery/...). DVC's public interface (dvc.api.exp_show,
# dvc exp show --json) lists the same experiments but collects every experiment's params and metrics first: seconds
# where git answers in milliseconds. pyproject.toml pins the DVC versions; tests/test_revisions.py checks this
# layout against the installed DVC's own experiments.
_EXPERIMENT_REF = re.compile(r"refs/exps/([0-9a-f]{2})/([0-9a-f]{38}|[0-9a-f]{62})/([^/]+)")


class NotAtRevision(DataError):
    """The file is not there (at the revision, or in the workspace): a run may lack a file; a broken one is an error."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise DataError("git is not installed: revisions cannot be read") from None


def _experiments(repo: Path, prefix: str) -> list[tuple[str, str, str]]:
    """The experiments under the refs ``prefix``, oldest first: [(ref, name, commit sha), ...] (not DVC's own refs)."""
    done = _git(repo, "for-each-ref", prefix, "--sort=committerdate", "--format=%(refname) %(objectname)")
    found = []
    for line in done.stdout.splitlines():
        ref, sha = line.split()
        parsed = _EXPERIMENT_REF.fullmatch(ref)
        if parsed is not None:
            found.append((ref, parsed[3], sha))
    return found


def experiment_refs(repo: str | Path = ".") -> dict[str, list[tuple[str, str]]]:
    """DVC experiments by name, oldest first: name -> [(ref, commit sha), ...]."""
    found: dict[str, list[tuple[str, str]]] = {}
    for ref, name, sha in _experiments(Path(repo), EXPERIMENT_REFS):
        found.setdefault(name, []).append((ref, sha))
    return found


def experiments_of(sha: str, repo: str | Path = ".") -> list[tuple[str, str]]:
    """The DVC experiments based on commit ``sha``, oldest first: [(name, commit sha), ...]."""
    return [(name, exp) for _, name, exp in _experiments(Path(repo), f"{EXPERIMENT_REFS}{sha[:2]}/{sha[2:]}/")]


def _baseline(ref: str) -> str:
    """The commit an experiment's ref says it is based on."""
    parsed = _EXPERIMENT_REF.fullmatch(ref)
    return parsed[1] + parsed[2] if parsed else ""


def resolve(rev: str, repo: str | Path = ".") -> str:
    """The commit sha of a git revision or DVC experiment name; a DataError when there is none."""
    repo = Path(repo)
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if done.returncode == 0:
        return done.stdout.strip()
    candidates = experiment_refs(repo).get(rev, [])
    if len(candidates) > 1:  # several experiments of that name: the one based on HEAD, else the newest
        head = _git(repo, "rev-parse", "HEAD").stdout.strip()
        candidates = [c for c in candidates if _baseline(c[0]) == head] or candidates[-1:]
    if candidates:
        return candidates[0][1]
    if _git(repo, "rev-parse", "--git-dir").returncode != 0:
        raise DataError(f"{repo.resolve()}: not a git repository, so revision {rev!r} cannot be read")
    raise DataError(f"{rev!r} is neither a git revision nor a DVC experiment of this repository")


def read_text_at(rev: str, path: str | Path, repo: str | Path = ".") -> str:
    """The content of ``path`` (relative to the repository root) at ``rev``; missing, a NotAtRevision naming both."""
    sha = resolve(rev, repo)
    done = _git(Path(repo), "show", f"{sha}:{Path(path).as_posix()}")
    if done.returncode != 0:
        raise NotAtRevision(f"{path}: not found at {rev} ({sha[:7]}); was it evaluated and committed there?")
    return done.stdout
