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
test that assumes ``auto`` means fp32. Without native bf16, bf16 is emulated and training is slower, so run
it on the modules that train, for example::

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

# The slow modules first. pytest-xdist hands out whole modules (--dist=loadfile) in collection order
# (--no-loadscope-reorder: by default it orders them by their number of tests, which starts the longest
# modules, those of one or two DVC or torchrun tests, last), one to each worker, and the next one to a worker
# whose module has two tests or fewer left. So modules marked slow as a whole (pytestmark) go first, then those
# with some slow tests, then the rest, each group in collection order: the short modules fill in around the
# long ones at the end. `pytest --durations=0` shows which tests to mark slow. An estimate, from each module's
# time run alone (pytest -n 0 on a 2-core AMD EPYC) and a model of this scheduling (3 workers sharing 2 cores,
# the tiny project built once): both cores stay busy to the end, the whole within 1% of the work / 2 cores.


def _rank(item: pytest.Item, slow_modules: set) -> int:
    """0: its module is marked slow as a whole; 1: its module has slow tests; 2: the rest."""
    module = item.getparent(pytest.Module)
    if any(mark.name == "slow" for mark in getattr(module, "own_markers", [])):
        return 0
    return 1 if item.path in slow_modules else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow_modules = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: _rank(item, slow_modules))  # stable: modules and their tests keep their order
