"""Files written whole or not at all, and read back with errors that name them.

Every output goes to a temporary file beside its destination and is renamed
into place only once complete and flushed to disk, so a kill, a crash or a full
disk at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from petseg.errors import DataError

TEMP_MARK = ".tmp-"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs get the usual permissions (0644 under umask 022)
FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place when the block succeeds.

    The caller writes the temporary file completely (any library, any format);
    on an exception it is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=path.parent)
    os.close(fd)
    temp = Path(name)
    os.chmod(temp, FILE_MODE)
    try:
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` when the block succeeds."""
    with atomic_path(path) as temp, open(temp, mode, **kwargs) as handle:
        yield handle
        handle.flush()


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, indented and key-ordered as given, ending in a newline."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save one array as .npy atomically."""
    with atomic_open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def remove_stale_temps(directory: str | Path) -> None:
    """Delete temporary files left in ``directory`` by a process that was killed mid-write."""
    directory = Path(directory)
    if directory.is_dir():
        for leftover in directory.glob(f".*{TEMP_MARK}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def load_json(path: str | Path) -> Any:
    """Read a JSON file; a missing, truncated or corrupt file is a DataError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a valid JSON file (corrupt or truncated?): {exc}") from None


def load_npy(
    path: str | Path,
    *,
    mmap: bool = True,
    dtype: np.dtype | type | None = None,
    ndim: int | None = None,
) -> np.ndarray:
    """Open a .npy array (memory-mapped by default), checking it is whole and of the expected kind."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a valid .npy array (corrupt or truncated?): {exc}") from None
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise DataError(f"{path}: expected dtype {np.dtype(dtype)}, found {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise DataError(f"{path}: expected {ndim} dimensions, found shape {array.shape}")
    return array
