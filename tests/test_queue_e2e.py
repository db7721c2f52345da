"""DVC's queue makes seed replicates of the committed recipe, and the seed study reads them.

A project of its own (a copy of the session's tiny project after its first run, tests/projectcopy.py),
so that this module and tests/test_pipeline_e2e.py run on different pytest-xdist workers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.projectcopy import dvc_env, reproduced_project, run

pytestmark = pytest.mark.slow  # two queued experiments on the reproduced tiny project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny copy of the project whose first run is committed (seed 42)."""
    return reproduced_project(tmp_path_factory, "queue")[0]


def test_queued_seeds_make_replicates_that_compare_reads(project: Path):
    """Two seeds of the committed recipe through DVC's queue with two workers, then the seed study over them."""
    run(project, "dvc", "exp", "run", "--queue", "-S", "train.seed=0,1")
    # The workers are daemons that keep `dvc queue start`'s stdout: a pipe would hold this test until they exit,
    # and a worker whose idle monitor died (a kombu filesystem-broker race) never does. So: a file, then poll.
    with open(project / "queue-start.log", "w") as log:
        started = subprocess.run(
            ["dvc", "queue", "start", "-j", "2"], cwd=project, stdout=log, stderr=subprocess.STDOUT, env=dvc_env()
        )
    assert started.returncode == 0, (project / "queue-start.log").read_text()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = run(project, "dvc", "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(8)  # each `dvc queue status` costs a second or two of CPU
    run(project, "dvc", "queue", "stop", "--kill")  # idle workers too
    assert status.count("Success") >= 2 and "Failed" not in status, status
    shown = json.dumps(json.loads(run(project, "dvc", "exp", "show", "--json")))
    assert '"seed": 0' in shown and '"seed": 1' in shown
    report_file = project / "study.json"
    output = run(project, sys.executable, "stages/compare.py", "--experiments", "--json", str(report_file))
    report = json.loads(report_file.read_text())
    # the commit's own run (seed 42) and the two queued seeds: one recipe, one group
    (group,) = report["groups"]
    assert sorted(group["seeds"]) == [0, 1, 42] and group["runs"][0] == "HEAD"
    within = [d for d in report["differences"] if d["model"] is None]
    assert {d["metric"] for d in within} == {"dice_mean", "boundary_iou_mean"}
    assert all(d["n_seeds_a"] == d["n_seeds_b"] == 3 and d["includes_training_noise"] for d in within)
    assert all((d["ci95_low"] <= d["diff"] <= d["ci95_high"]) for d in within)
    assert "3 vs 3 seeds" in output and "one seed a side" not in output
