"""Shared by every test module: split the CPU between pytest-xdist's workers.

The suite runs with one worker per CPU core plus one (``-n auto`` in pyproject.toml, and the hook
below): the DVC tests spend much of their time waiting on the disk (checkpoints, DVC's cache), and
the extra worker uses that time. Each worker, and every process it starts (stage scripts, dvc,
torchrun), then gets its share of the cores as torch's thread count (at least one thread).
"""

from __future__ import annotations

import os


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per usable core, plus one."""
    return _cores() + 1


_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores() // _workers))

# The longest modules first (seconds each, with three workers on a 2-core machine, roughly). pytest-xdist
# hands out whole modules (--dist=loadfile) in collection order (--no-loadscope-reorder: by default it
# reorders them by their number of tests), one to each worker, and then the next one to a worker whose
# module has two tests or fewer left. test_dvc_faults.py comes first: its worker makes the session's
# reproduced tiny project (tests/projectcopy.py) while the others start on modules that do not need it,
# so that the two that do (the e2e modules) find it made. The short modules fill in around the long ones.
LONG_MODULES = (
    "test_dvc_faults.py",  # ~300 with the first dvc repro: forced reruns, failing stages
    "test_registry.py",  # ~210: a third model through the whole pipeline
    "test_training.py",  # ~90
    "test_distributed.py",  # ~85
    "test_pipeline_e2e.py",  # ~230: evaluate-only change, exp run, the README's tables
    "test_queue_e2e.py",  # ~120: two queued seeds (one test: its worker takes the next module too)
    "test_faults_files.py",
    "test_infer.py",
    "test_seeds.py",
    "test_plot.py",
    "test_faults_params.py",
    "test_compare.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its own order
