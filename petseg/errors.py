"""Errors that petseg reports to users as one clear line instead of a traceback.

Every error a user can cause (bad params, broken data files, corrupt checkpoints)
derives from :class:`PetsegError`; stage scripts print its message and exit
non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PetsegError(Exception):
    """A problem the user can fix; the message says what and where."""

    exit_code = 1


class ParamsError(PetsegError):
    """params.yaml (or a -S override) holds a value the pipeline cannot use."""

    exit_code = 2


class DataError(PetsegError):
    """A dataset file, archive or cache array is missing, corrupt or inconsistent."""


class CheckpointError(PetsegError):
    """A checkpoint is missing, corrupt, unsafe or does not fit the model."""


class OutputError(PetsegError):
    """An output cannot be written (disk full, over quota, no permission); the previous file is kept."""
