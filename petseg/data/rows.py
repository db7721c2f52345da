"""A uint8 .npy file filled row by row by several processes, then compacted over the skipped rows."""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path

import numpy as np


class NpyRows:
    """A uint8 .npy file of fixed-shape rows, written in place by row number, then compacted.

    It is created at full capacity with ``np.lib.format.open_memmap`` (a sparse
    file: no memory, no disk blocks until written). Decoding workers write
    each row straight to its place with ``os.pwrite`` (no arrays travel back
    to the parent, and no process keeps the data mapped, so memory does not
    grow with the dataset). ``compact`` then moves the kept rows together over
    the skipped ones, in chunks, cuts the file and rewrites the header's row count.
    """

    def __init__(self, path: Path, capacity: int, row_shape: tuple[int, ...]):
        self.path, self.capacity, self.row_shape = Path(path), capacity, row_shape
        array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=(capacity, *row_shape))
        self.offset = int(array.offset)
        del array
        self.row_bytes = int(np.prod(row_shape))

    @property
    def target(self) -> tuple[str, int, int]:
        """What a worker needs to write rows: (path, header size, bytes per row)."""
        return str(self.path), self.offset, self.row_bytes

    def compact(self, kept: list[bool]) -> int:
        """Keep only the rows flagged in ``kept`` (in order); fix the header and the file size; return the row count."""
        if len(kept) != self.capacity:
            raise ValueError(f"{self.path}: {len(kept)} flags for {self.capacity} rows")
        rows = int(sum(kept))
        block_rows = max(1, (16 << 20) // self.row_bytes)
        with open(self.path, "r+b") as handle:
            fd, destination, start = handle.fileno(), 0, 0
            while start < self.capacity:
                if not kept[start]:
                    start += 1
                    continue
                end = start
                while end < self.capacity and kept[end]:
                    end += 1
                if start != destination:  # destination < start: copying forward never overwrites unread rows
                    for first in range(start, end, block_rows):
                        count = min(block_rows, end - first)
                        data = os.pread(fd, count * self.row_bytes, self.offset + first * self.row_bytes)
                        os.pwrite(fd, data, self.offset + (destination + first - start) * self.row_bytes)
                destination += end - start
                start = end
            handle.truncate(self.offset + rows * self.row_bytes)
            header = _npy_header((rows, *self.row_shape))
            if len(header) == self.offset:
                os.pwrite(fd, header, 0)
                return rows
        # The header length changed (numpy pads it so this should not happen): copy behind a new header.
        copy = self.path.with_name(self.path.name + ".rows")
        with open(self.path, "rb") as source, open(copy, "wb") as target:
            target.write(header)
            source.seek(self.offset)
            shutil.copyfileobj(source, target, 16 << 20)
        os.replace(copy, self.path)
        return rows


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


# where a worker writes one array's rows: (path, header size, bytes per row)
RowTarget = tuple[str, int, int]


class RowWriter:
    """Writes decoded rows straight into NpyRows files (in a worker process), one write per run of rows.

    Rows that follow each other in the same files are gathered and written with
    one ``pwritev`` per array; the kernel is told to start writing them back to
    disk at once (while decoding goes on) rather than at the final fsync.
    """

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}
        self.targets: tuple[RowTarget, ...] = ()
        self.first_row = 0
        self.run: list[tuple[np.ndarray, ...]] = []

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            for fd in self.fds.values():
                os.close(fd)

    def write(self, targets: tuple[RowTarget, ...], row: int, arrays: tuple[np.ndarray, ...]) -> None:
        """Queue one row of each target file (``arrays[k]`` goes to ``targets[k]``)."""
        if self.run and (targets != self.targets or row != self.first_row + len(self.run)):
            self.flush()
        if not self.run:
            self.targets, self.first_row = targets, row
        self.run.append(arrays)

    def flush(self) -> None:
        if not self.run:
            return
        for k, (path, offset, row_bytes) in enumerate(self.targets):
            if path not in self.fds:
                self.fds[path] = os.open(path, os.O_WRONLY)
            buffers = [np.ascontiguousarray(rows[k]).data for rows in self.run]
            start = offset + self.first_row * row_bytes
            written = os.pwritev(self.fds[path], buffers, start)
            if written != sum(buffer.nbytes for buffer in buffers):
                raise OSError(errno.ENOSPC, f"short write to {path}")
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self.fds[path], start, written, os.POSIX_FADV_DONTNEED)
        self.run.clear()
