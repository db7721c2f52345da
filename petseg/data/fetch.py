"""Resumable, retried downloads from a list of mirrors, for archives too big to fetch twice.

Guarantees of :func:`fetch`:

- bytes go to ``<target>.part`` beside the target, flushed as they arrive, so
  a later attempt (a retry in this run, or the next run after a kill) continues
  with an HTTP ``Range: bytes=N-`` request. A server that ignores Range
  (answers 200) restarts the file cleanly from byte 0; one that answers 416
  (nothing past byte N) has the partial file checked: valid, it is used,
  otherwise it is restarted from 0. Data sent with no announced length that
  does not match the md5 may have been cut short: more is asked for, and only
  a 416 then makes it a mismatch;
- the target name only ever receives a file whose md5 matched: the ``.part``
  is renamed once complete and verified. A mismatch deletes it and is a
  DataError naming the file, the URL and both md5s;
- transient failures (connection reset or refused, timeouts, incomplete reads,
  HTTP 5xx, 408, 429) are retried with exponential backoff, continuing from the
  bytes already received; ``ATTEMPTS`` failures in a row that bring no new
  bytes give up on the URL (an attempt that grows the file does not count);
- the URLs are mirrors of one file, tried in order: a 404 (or any other 4xx),
  or repeated failure, moves on to the next. When every URL fails, one
  DataError lists each with its failure, and the partial file is kept for the
  next run. The log says which URL served the file;
- ``file://`` URLs are copied; no read waits more than ``TIMEOUT_S`` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from petseg.errors import DataError
from petseg.io import write_error

log = logging.getLogger(__name__)

ATTEMPTS = 4  # failures in a row, without new bytes, before a URL is given up
BACKOFF_S = 1.0  # wait before the first retry, doubled for each further failure in a row (tests set it small)
TIMEOUT_S = 60.0  # socket timeout: connecting, and each read
CHUNK = 1 << 20
PART_SUFFIX = ".part"
USER_AGENT = "petseg-download (Python urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


class _Transient(Exception):
    """A failure worth retrying: the connection, not the URL, is at fault."""


class _GiveUp(Exception):
    """A failure of this URL that retrying will not fix (404, 403, an unknown host, too many failures)."""


def part_path(target: Path) -> Path:
    """Where the bytes of ``target`` collect until it is complete and verified: ``<target>.part``."""
    return target.with_name(target.name + PART_SUFFIX)


def file_md5(path: Path) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open_part(part: Path, append: bool) -> BinaryIO:
    try:
        return open(part, "ab" if append else "wb")
    except OSError as exc:
        raise write_error(part, exc) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP Error {exc.code}: {exc.reason}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    elif isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def _failure(exc: BaseException) -> Exception:
    """The exception to raise for a failed request: retried, or the end of this URL."""
    if isinstance(exc, urllib.error.HTTPError):
        retry = exc.code in (408, 429) or exc.code >= 500
    else:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        retry = isinstance(reason, (OSError, http.client.HTTPException)) and not isinstance(
            reason, (socket.gaierror, ssl.SSLCertVerificationError)
        )
    return (_Transient if retry else _GiveUp)(_describe(exc))


def _attempt(url: str, part: Path, md5: str, progress: bool, confirming: bool = False) -> bool:
    """One request: add what the server sends to ``part``, until it says the file is complete.

    Returns whether the end is certain (the announced length arrived, or a 416);
    False when the server announced no length, so that the end of the data
    might be a dropped connection. ``confirming``: asking for more after such
    an end, where a 416 means the file really ended there.
    """
    have = _size(part)
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            exc.close()
        if exc.code == 416 and have:  # nothing past byte `have`: complete already, or longer than the file
            match = _UNSATISFIED_RANGE.fullmatch((exc.headers.get("Content-Range") or "").strip())
            if confirming or ((match is None or int(match.group(1)) == have) and file_md5(part) == md5):
                return True
            _open_part(part, append=False).close()
            raise _Transient(f"HTTP 416: the partial file ({have} bytes) is not the file; restarting from 0") from None
        raise _failure(exc) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _failure(exc) from None
    except ValueError as exc:  # a malformed URL
        raise _GiveUp(str(exc)) from None
    with response:
        start, total = 0, None
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
            if match is None or int(match.group(1)) != have:
                _open_part(part, append=False).close()
                raise _Transient("the server sent another range than the one asked for; restarting from 0")
            start = have
            total = int(match.group(3)) if match.group(3) != "*" else None
        else:
            if have:
                log.info("%s: the server ignores Range requests; restarting from 0", url)
            total = length
        read = getattr(response, "read1", response.read)
        received = 0
        name = part.name.removesuffix(PART_SUFFIX)
        bar = tqdm(total=total, initial=start, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                   disable=not progress, leave=False, dynamic_ncols=True)  # fmt: skip
        with _open_part(part, append=start > 0) as handle, bar:
            while True:
                try:
                    chunk = read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(_describe(exc)) from None
                if not chunk:
                    break
                try:
                    handle.write(chunk)
                    handle.flush()
                except OSError as exc:
                    raise write_error(part, exc) from None
                received += len(chunk)
                bar.update(len(chunk))
    expected = total if total is not None else (start + length if length is not None else None)
    if expected is not None and start + received < expected:
        raise _Transient(f"the connection closed after {start + received} of {expected} bytes")
    return expected is not None


def _fetch_from(url: str, part: Path, md5: str, progress: bool) -> None:
    """Complete ``part`` from ``url``, retrying transient failures with backoff; _GiveUp when it cannot."""
    if urllib.parse.urlsplit(url).scheme == "file":
        try:
            shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), part)
        except OSError as exc:
            raise _GiveUp(_describe(exc)) from None
        return
    failures, largest, confirming = 0, _size(part), False
    while True:
        try:
            if _attempt(url, part, md5, progress, confirming) or file_md5(part) == md5:
                return
            confirming = True  # no announced length, and not the file (yet): ask for what may follow
            raise _Transient(f"the data ended at byte {_size(part)} with no announced length, not matching the md5")
        except _Transient as exc:
            size = _size(part)
            failures = 0 if size > largest else failures + 1
            largest = max(largest, size)
            if failures >= ATTEMPTS:
                raise _GiveUp(f"{failures} attempts in a row failed, the last: {exc}") from None
            delay = BACKOFF_S * 2 ** max(failures - 1, 0)
            log.warning("%s: %s; retrying in %.3g s from byte %d", url, exc, delay, size)
            time.sleep(delay)


def fetch(urls: list[str], target: Path, md5: str, *, progress: bool = True) -> str:
    """Download ``target`` from the first of ``urls`` that serves it, verify its md5, return the serving URL.

    Each URL is a mirror of the same file; the partial file carries over from
    one to the next, and from one run to the next.
    """
    md5 = md5.lower()
    part = part_path(target)
    failed: list[str] = []
    for url in urls:
        have = _size(part)
        log.info("%s: downloading from %s%s", target.name, url, f", continuing from byte {have}" if have else "")
        try:
            _fetch_from(url, part, md5, progress)
        except _GiveUp as exc:
            log.warning("%s: %s%s", url, exc, "; trying the next URL" if url != urls[-1] else "")
            failed.append(f"{url} ({exc})")
            continue
        actual = file_md5(part)
        if actual != md5:
            part.unlink(missing_ok=True)
            raise DataError(
                f"{target}: md5 mismatch for {url}: expected {md5}, got {actual} (corrupt download, or a wrong md5 "
                "in params.yaml); the downloaded file was deleted"
            )
        os.replace(part, target)
        log.info("%s: %d bytes served by %s, md5 %s ok", target, _size(target), url, md5)
        return url
    kept = _size(part)
    if not kept:
        part.unlink(missing_ok=True)
    note = f"; the {kept} bytes received are kept in {part} and the next run continues from there" if kept else ""
    raise DataError(f"{target}: download failed from every URL: {'; '.join(failed)}{note}")
