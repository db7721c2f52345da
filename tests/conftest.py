"""Shared by every test module: split the CPU between pytest-xdist's workers; the precision switch.

The suite runs with one worker per CPU core plus one (``-n auto`` in pyproject.toml, and the hook
below): the DVC tests spend much of their time waiting on the disk (checkpoints, DVC's cache), and
the extra worker uses that time. Each worker, and every process it starts (stage scripts, dvc,
torchrun), then gets its share of the cores as torch's thread count (at least one thread).

``PETSEG_TEST_PRECISION`` (``auto``, ``fp32``, ``bf16`` or ``fp16``; unset: params.yaml's own ``auto``) sets
``train.precision`` in the params every test starts from (tests/paramsfile.py ``default_params`` and the
params.yaml of each copied project, tests/projectcopy.py); a test that sets ``train.precision`` itself keeps
its own. ``train.precision: auto`` picks bf16 on a CPU with native bf16 (AMX or AVX-512 BF16) and fp32 on one
without, so ``PETSEG_TEST_PRECISION=bf16`` runs the suite here as ``auto`` runs it on such a CPU, and shows any
test that assumes ``auto`` means fp32. Without native bf16, bf16 is emulated and training is an order of
magnitude slower, so run it on the modules that train, for example::

    PETSEG_TEST_PRECISION=bf16 python -m pytest tests/test_training.py tests/test_distributed.py

The header of pytest's report says which precision the tests ran in.
"""

from __future__ import annotations

import os

import pytest

from tests.paramsfile import PRECISION_SWITCH, PRECISIONS, forced_precision


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_configure(config) -> None:
    forced = forced_precision()
    if forced is not None and forced not in PRECISIONS:
        raise pytest.UsageError(f"{PRECISION_SWITCH}={forced!r} is not a train.precision; use one of {PRECISIONS}")


def pytest_report_header(config) -> str:
    forced = forced_precision()
    where = f"{forced} ({PRECISION_SWITCH})" if forced else "params.yaml's (auto, unless a test sets it)"
    return f"train.precision in the tests' params: {where}"


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
    "test_seed_study.py",  # two queued seeds, then record and report
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
