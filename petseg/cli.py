"""What every stage script shares: its argument parser, logging, the validated params, and clean exits.

A stage script is a door, not a room: it parses its arguments, loads the
validated params and makes one call into the library inside :func:`run_stage`.
A :class:`~petseg.errors.PetsegError` becomes one line on stderr and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from petseg.errors import PetsegError
from petseg.params import Params, load_params

log = logging.getLogger("petseg")

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser showing the script's docstring, with ``--params``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser


def setup_logging(verbose: bool = False) -> None:
    """Plain messages on stderr, so progress bars and logs do not interleave badly."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)


def stage_params(path: str | Path = "params.yaml") -> Params:
    """The validated params of the pipeline (the whole file is checked, always)."""
    return load_params(path)


def run_stage(main: Callable[[], int | None]) -> NoReturn:
    """Run a stage's main function and turn user-facing errors into clean exits."""
    setup_logging()
    try:
        code = main() or 0
    except PetsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; run the stage again to continue", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)
