"""Shared by every test module: split the CPU between pytest-xdist's workers.

The suite runs with one worker per CPU core (``-n auto`` in pyproject.toml). Each worker, and every
process it starts (stage scripts, dvc, torchrun), then gets its share of the cores as torch's
thread count, so workers do not oversubscribe the machine.
"""

from __future__ import annotations

import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))
