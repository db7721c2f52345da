"""Files written whole or not at all, and read back with errors that name them.

Every output goes to a temporary file beside its destination and is renamed
into place only once complete and flushed to disk, so a kill, a crash or a full
disk at any moment leaves either the old file or the new one, never half of one.
A write that fails (disk full, over quota, no permission) is an
:class:`~petseg.errors.OutputError` naming the file. Temporary names carry the
writer's process id, so the clean-up of files left by a killed run never
touches those of a writer that is still running.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from petseg.errors import DataError, OutputError

TEMP_MARK = ".tmp-"
# the writer's pid follows TEMP_MARK: .<name>.tmp-<pid>-<random> (or .<name>.tmp-<pid>)
_TEMP_PID = re.compile(re.escape(TEMP_MARK) + r"(\d+)(?:-|$)")
NPY_MAGIC = b"\x93NUMPY"
LOW_SPACE_BYTES = 100 << 20  # below this much free space, a failed write mentions it


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


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporary names for ``name``: ``.<name>.tmp-<pid>-``."""
    return f".{name}{TEMP_MARK}{os.getpid()}-"


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except (OSError, OverflowError):
        return False
    return True


def left_by_dead_process(path: str | Path) -> bool:
    """Whether a temporary file or folder was left by a writer that no longer runs.

    The writer's pid is part of the name; a name without one (an older
    format) counts as left behind. This process's own temporaries never do.
    """
    match = _TEMP_PID.search(Path(path).name)
    if match is None:
        return TEMP_MARK in Path(path).name
    pid = int(match.group(1))
    return pid != os.getpid() and not _process_exists(pid)


def write_error(path: str | Path, exc: BaseException) -> OutputError:
    """An OutputError for a failed write of ``path``: why, the free space when low, and that nothing was replaced."""
    path = Path(path)
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
        if exc.errno == errno.EFBIG:
            reason += " (above this process's file size limit, see ulimit -f)"
    else:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        reason = f"the write failed (disk full, or a file size limit?): {detail}"
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(directory).free
        if free < LOW_SPACE_BYTES:
            reason += f"; only {free / 1e6:.1f} MB free on its file system"
    return OutputError(f"{path}: cannot write: {reason}; nothing was replaced, any previous version is intact")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place when the block succeeds.

    The caller writes the temporary file completely (any library, any format);
    on an exception it is removed and ``path`` is left untouched. An OSError
    raised while writing (disk full, no permission) becomes an OutputError naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    temp = Path(name)
    try:
        os.chmod(temp, FILE_MODE)
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
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
    """Delete temporary files left in ``directory`` by processes killed mid-write (not those of live writers)."""
    directory = Path(directory)
    if directory.is_dir():
        for leftover in directory.glob(f".*{TEMP_MARK}*"):
            if left_by_dead_process(leftover) and not leftover.is_dir():
                with contextlib.suppress(OSError):
                    leftover.unlink()


def parse_yaml(text: str, source: str) -> Any:
    """YAML ``text`` read from ``source`` (a file, or a file at a revision), as DVC reads it.

    The one YAML reader of the project: ruamel.yaml, safe (plain data only) and pure
    (the same parser everywhere), YAML 1.2 as DVC. Invalid YAML is a one-line
    DataError naming ``source``.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise DataError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with :func:`parse_yaml`; a missing or unreadable file is a DataError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    return parse_yaml(text, str(path))


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
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic != NPY_MAGIC:
        what = "empty (0 bytes)" if not magic else "not a .npy array (no NumPy header: corrupt or truncated?)"
        raise DataError(f"{path}: {what}")
    _check_npy_length(path)
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a damaged header can fail deep inside NumPy's parser, any way
        raise DataError(
            f"{path}: not a valid .npy array (corrupt?): NumPy cannot read it ({type(exc).__name__})"
        ) from None
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise DataError(f"{path}: expected dtype {np.dtype(dtype)}, found {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise DataError(f"{path}: expected {ndim} dimensions, found shape {array.shape}")
    return array


def _check_npy_length(path: Path) -> None:
    """A .npy file must be as long as its header says (header, then rows x row bytes)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(handle)
            expected = handle.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception:  # noqa: BLE001 - ValueError, SyntaxError, ... from a damaged header
        raise DataError(f"{path}: not a valid .npy array (its header is damaged)") from None
    if dtype.hasobject:
        raise DataError(f"{path}: not an array of numbers (it holds Python objects)")
    if size < expected:
        raise DataError(f"{path}: truncated ({size} of {expected} bytes; the file was cut short)")


def read_table(path: str | Path, delimiter: str, stage: str, what: str) -> list[dict[str, str]]:
    """Rows of a CSV/TSV ``what`` written by the ``stage`` stage; it must end in a newline (else it was cut short)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; the {stage} stage writes it (dvc repro {stage})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}") from None
    return parse_table(text, delimiter, str(path), stage, what)


def parse_table(text: str, delimiter: str, source: str, stage: str, what: str) -> list[dict[str, str]]:
    """Rows of CSV/TSV ``text`` read from ``source`` (a file, or a file at a revision), checked as read_table does."""
    if text and not text.endswith("\n"):
        raise DataError(f"{source}: truncated {what} (its last line is incomplete); re-run it: dvc repro {stage}")
    try:
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{source}: cannot read {what}: {exc}") from None
