"""Helpers of the download tests (no tests here): a real, scriptable HTTP server on 127.0.0.1, and archive builders."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import tarfile
import threading
from pathlib import Path

OK, CUT, STALL, IGNORE_RANGE = "ok", "cut", "stall", "ignore-range"


class Server:
    """Serves ``files`` (URL path -> bytes) over real HTTP on 127.0.0.1, honouring ``Range: bytes=N-``.

    How it answers each request for a path is scripted: ``plans[path]`` is a
    list of behaviours used up one a request, then ``always[path]`` (default
    ``ok``) applies. Behaviours: ``ok``; ``cut`` (announces the whole length,
    sends only up to the middle of the file, closes); ``stall`` (sends up to the
    middle, then goes silent until the test ends); ``ignore-range`` (200 with the
    whole file, whatever the request asked); a status code such as ``"503"``.
    Paths in ``no_length`` are sent with no Content-Length (the end is where
    the connection closes). ``requests`` records (path, Range header or None)
    of every request.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.plans: dict[str, list[str]] = {}
        self.always: dict[str, str] = {}
        self.no_length: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        self.release = threading.Event()
        lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                asked = self.headers.get("Range")
                with lock:
                    server.requests.append((self.path, asked))
                    plan = server.plans.get(self.path)
                    behaviour = plan.pop(0) if plan else server.always.get(self.path, OK)
                body = server.files.get(self.path)
                self.close_connection = True
                if body is None:
                    self.send_error(404)
                    return
                if behaviour.isdigit():
                    self.send_error(int(behaviour))
                    return
                start = 0
                if asked and behaviour != IGNORE_RANGE:
                    start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if self.path not in server.no_length:
                    self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                stop = max(start, len(body) // 2) if behaviour in (CUT, STALL) else len(body)
                try:
                    self.wfile.write(body[start:stop])
                    self.wfile.flush()
                    if behaviour == STALL:
                        server.release.wait(30)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [path for path, _ in self.requests]

    def reset(self) -> None:
        """Forget requests and scripts (the files stay)."""
        self.requests.clear()
        self.plans.clear()
        self.always.clear()
        self.no_length.clear()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tar_gz(root: Path, top: str, extra: dict[str, bytes] | None = None, drop: set[str] | None = None) -> bytes:
    """A .tar.gz of ``root/top`` (with ``extra`` files added and ``drop`` members left out)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted((root / top).rglob("*")):
            member = str(path.relative_to(root))
            if drop and member in drop:
                continue
            tar.add(path, arcname=member, recursive=False)
        for member, data in (extra or {}).items():
            add_file(tar, member, data)
    return buffer.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    """Add a member of tar type ``kind`` (tarfile.SYMTYPE, LNKTYPE, CHRTYPE, FIFOTYPE...) with no data."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    tar.addfile(info)
