"""No dead code: vulture finds nothing in petseg/ and stages/ that this allowlist does not explain."""

from __future__ import annotations

import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIN_CONFIDENCE = 60
# (file pattern, name pattern) of what vulture reports but Python or petseg does use; the line says why too
ALLOWED = {
    # a package's lazy exports (PEP 562): Python calls a module's __getattr__, no code does
    ("petseg/*/__init__.py", "__getattr__"),
    # nn.Module.__call__ calls forward (every model's, the next one's too)
    ("petseg/models/nets/*.py", "forward"),
    # use_centre_taps gives a convolution a new class in place: the same weights, another forward
    ("petseg/models/nets/parts.py", "__class__"),
    # a model's params section, found by name through the registry (ModelInfo.section)
    ("petseg/params.py", "*Params"),
    # the checkpoint's writer, set by keyword in petseg.training.run, for whoever inspects a checkpoint
    ("petseg/checkpoint.py", "petseg_version"),
    # the tables write_tables writes, which tests check its output against
    ("petseg/plotting/data.py", "TABLES"),
}
REPORT = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): unused \w+(?: \w+)? '(?P<name>[^']+)' \(\d+% confidence")


def unexplained(*paths: str) -> list[str]:
    """What vulture reports in ``paths`` (from the repository root) that ALLOWED does not explain."""
    command = [sys.executable, "-m", "vulture", *paths, "--min-confidence", str(MIN_CONFIDENCE)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 3), result.stderr  # 3: vulture found something
    lines = result.stdout.splitlines()
    found = [REPORT.match(line) for line in lines]
    assert all(found), [line for line, match in zip(lines, found) if not match]  # vulture's format changed
    return [
        line
        for line, match in zip(lines, found)
        if not any(fnmatch(match["path"], path) and fnmatch(match["name"], name) for path, name in ALLOWED)
    ]


def test_vulture_finds_no_dead_code_in_petseg_or_the_stages(tmp_path: Path):
    planted = tmp_path / "planted.py"  # a dead function the check must report (so it can fail)
    planted.write_text("def never_called():\n    return 1\n")
    reported = unexplained("petseg", "stages", str(planted))
    assert reported == [f"{planted}:1: unused function 'never_called' (60% confidence)"], (
        "dead code, or a false alarm to explain in ALLOWED and at its line: " + "; ".join(reported)
    )
