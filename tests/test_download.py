"""The download stage against a real HTTP server on 127.0.0.1 serving archives built here."""

from __future__ import annotations

import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from petseg.data.download import archive_name, prepare_raw
from petseg.data.layout import check_layout
from petseg.data.preprocess import preprocess
from petseg.data.synthetic import generate
from petseg.errors import DataError
from tests.paramsfile import write_params

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """Serves ``files`` (URL path -> bytes); ``cut`` paths announce their full length but send half."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body[: len(body) // 2] if self.path in server.cut else body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _tar_gz(root: Path, top: str, extra: dict[str, bytes] | None = None, drop: set[str] | None = None) -> bytes:
    """A .tar.gz of ``root/top`` (with ``extra`` files added and ``drop`` members left out)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted((root / top).rglob("*")):
            member = str(path.relative_to(root))
            if drop and member in drop:
                continue
            tar.add(path, arcname=member, recursive=False)
        for member, data in (extra or {}).items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small raw set in the official layout, to pack into archives like the real ones."""
    raw = generate(tmp_path_factory.mktemp("source") / "raw", 12, 4, seed=2, workers=1, progress=False)
    return raw


@pytest.fixture(scope="module")
def archives(source: Path) -> dict[str, bytes]:
    names = [p.stem for p in (source / "images").iterdir()]
    images = _tar_gz(
        source, "images", extra={"images/Abyssinian_100.mat": b"MATLAB 5.0", "images/Abyssinian_101.mat": b"MATLAB"}
    )
    annotations = _tar_gz(
        source,
        "annotations",
        extra={
            "annotations/trimaps/._" + names[0] + ".png": b"\x00\x05\x16\x07AppleDouble",
            "annotations/xmls/" + names[0] + ".xml": b"<annotation/>",
            "annotations/list.txt": b"#Image CLASS-ID SPECIES BREED ID\n",
        },
    )
    no_lists = _tar_gz(source, "annotations", drop={"annotations/trainval.txt", "annotations/test.txt"})
    return {
        "/pets/images.tar.gz": images,
        "/pets/annotations.tar.gz": annotations,
        "/broken/images.tar.gz": images[: len(images) // 2],
        "/nolists/annotations.tar.gz": no_lists,
    }


@pytest.fixture(scope="module")
def serving(archives: dict[str, bytes]) -> Iterator[Server]:
    running = Server()
    running.files.update(archives)
    yield running
    running.stop()


@pytest.fixture()
def server(serving: Server) -> Server:
    """The module's server with a fresh request log and no cut transfers."""
    serving.requests.clear()
    serving.cut.clear()
    return serving


def _fetch(
    server: Server,
    archives: dict[str, bytes],
    tmp_path: Path,
    images: str = "/pets/images.tar.gz",
    annotations: str = "/pets/annotations.tar.gz",
    **md5s: str,
) -> Path:
    return prepare_raw(
        "oxford-iiit-pet",
        tmp_path / "raw",
        tmp_path / "downloads",
        images_urls=[server.url(images)],
        images_md5=md5s.get("images_md5", _md5(archives[images])),
        annotations_urls=[server.url(annotations)],
        annotations_md5=md5s.get("annotations_md5", _md5(archives[annotations])),
        n_trainval=2,
        n_test=1,
        seed=0,
    )


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) if directory.is_dir() else []


def test_good_pair_extracts_the_official_layout(
    server: Server, archives: dict[str, bytes], source: Path, tmp_path: Path
) -> None:
    raw = _fetch(server, archives, tmp_path)
    check_layout(raw)
    for path in source.rglob("*"):
        if path.is_file():
            assert (raw / path.relative_to(source)).read_bytes() == path.read_bytes()
    assert (raw / "images" / "Abyssinian_100.mat").is_file()  # extracted, later ignored by preprocess
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["annotations.tar.gz", "images.tar.gz"]
    assert _leftovers(tmp_path / "downloads") == [] and _leftovers(tmp_path) == []
    assert {"/pets/images.tar.gz", "/pets/annotations.tar.gz"} <= set(server.requests)

    result = preprocess(raw, tmp_path / "cache", image_size=32, workers=1, progress=False)
    assert sum(result.counts.values()) == 16 and result.report["skipped"] == []
    assert result.report["ignored_files"] == {"images": 2, "trimaps": 1}


def test_rerun_with_valid_archives_makes_no_request(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    _fetch(server, archives, tmp_path)
    assert server.requests
    server.requests.clear()
    (tmp_path / "raw" / "images").rename(tmp_path / "gone")  # even a damaged raw folder is rebuilt from the archives
    raw = _fetch(server, archives, tmp_path)
    assert server.requests == []
    check_layout(raw)


def test_wrong_md5_names_file_and_both_sums(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    wrong = "0123456789abcdef0123456789abcdef"
    actual = _md5(archives["/pets/images.tar.gz"])
    with pytest.raises(DataError) as caught:
        _fetch(server, archives, tmp_path, images_md5=wrong)
    message = str(caught.value)
    assert str(tmp_path / "downloads" / "images.tar.gz") in message
    assert f"expected {wrong}, got {actual}" in message
    assert not (tmp_path / "raw").exists()
    assert not (tmp_path / "downloads" / "images.tar.gz").exists()  # the bad file is not kept under the real name
    assert _leftovers(tmp_path / "downloads") == [] and _leftovers(tmp_path) == []


def test_a_stale_invalid_archive_is_downloaded_again(
    server: Server, archives: dict[str, bytes], tmp_path: Path
) -> None:
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "images.tar.gz").write_bytes(b"half of an old download")
    _fetch(server, archives, tmp_path)
    assert (tmp_path / "downloads" / "images.tar.gz").read_bytes() == archives["/pets/images.tar.gz"]
    assert server.requests.count("/pets/images.tar.gz") >= 1


def test_interrupted_transfer_is_a_md5_error(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    server.cut.add("/pets/annotations.tar.gz")
    with pytest.raises(DataError, match="md5 mismatch"):
        _fetch(server, archives, tmp_path)
    assert not (tmp_path / "raw").exists()
    assert not (tmp_path / "downloads" / "annotations.tar.gz").exists()


def test_truncated_archive_leaves_the_previous_raw_folder(
    server: Server, archives: dict[str, bytes], tmp_path: Path
) -> None:
    raw = _fetch(server, archives, tmp_path)
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match=r"images\.tar\.gz: cannot extract"):
        # Same md5 as the served (truncated) bytes, so only extraction can notice.
        _fetch(server, archives, tmp_path / "again", images="/broken/images.tar.gz")
    assert not (tmp_path / "again" / "raw").exists() and _leftovers(tmp_path / "again") == []

    (tmp_path / "downloads" / "images.tar.gz").write_bytes(archives["/broken/images.tar.gz"])
    with pytest.raises(DataError, match="cannot extract"):
        _fetch(server, archives, tmp_path, images="/broken/images.tar.gz")
    assert {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()} == before
    assert _leftovers(tmp_path) == []


def test_archives_without_the_layout_are_refused(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing: annotations/trainval.txt, annotations/test.txt"):
        _fetch(server, archives, tmp_path, annotations="/nolists/annotations.tar.gz")
    assert not (tmp_path / "raw").exists() and _leftovers(tmp_path) == []


def test_http_error_is_a_data_error(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"/pets/nothing\.tar\.gz: download failed: HTTP Error 404"):
        prepare_raw(
            "oxford-iiit-pet", tmp_path / "raw", tmp_path / "downloads",
            images_urls=[server.url("/pets/nothing.tar.gz")], images_md5="0" * 32,
            annotations_urls=[server.url("/pets/annotations.tar.gz")], annotations_md5="0" * 32,
            n_trainval=2, n_test=1, seed=0,
        )  # fmt: skip
    assert _leftovers(tmp_path / "downloads") == []


def test_file_urls_are_copied(archives: dict[str, bytes], tmp_path: Path) -> None:
    """params.yaml accepts file:// URLs (a local mirror); torchvision's downloader does not, so they are copied."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("images.tar.gz", "annotations.tar.gz"):
        (mirror / name).write_bytes(archives[f"/pets/{name}"])
    raw = prepare_raw(
        "oxford-iiit-pet", tmp_path / "raw", tmp_path / "downloads",
        images_urls=[(mirror / "images.tar.gz").as_uri()], images_md5=_md5(archives["/pets/images.tar.gz"]),
        annotations_urls=[(mirror / "annotations.tar.gz").as_uri()],
        annotations_md5=_md5(archives["/pets/annotations.tar.gz"]).upper(),  # md5s are case-insensitive
        n_trainval=2, n_test=1, seed=0,
    )  # fmt: skip
    check_layout(raw)


def test_archive_name() -> None:
    assert archive_name("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz") == "images.tar.gz"
    assert archive_name("http://127.0.0.1:8000/a%20b/annotations.tar.gz?x=1") == "annotations.tar.gz"


def _params(tmp_path: Path, **data: object) -> Path:
    return write_params(tmp_path / "params.yaml", {f"data.{key}": value for key, value in data.items()})


def test_stage_script_downloads_as_a_subprocess(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    def stage(params: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "stages" / "download.py"), "--params", str(params)]
        return subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    urls = {
        "source": "oxford-iiit-pet",
        "images_url": server.url("/pets/images.tar.gz"),
        "annotations_url": server.url("/pets/annotations.tar.gz"),
        "annotations_md5": _md5(archives["/pets/annotations.tar.gz"]),
    }
    failed = stage(_params(tmp_path, **urls, images_md5="f" * 32))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert (
        f"md5 mismatch for {urls['images_url']}: expected {'f' * 32}, got {_md5(archives['/pets/images.tar.gz'])}"
        in failed.stderr
    )
    assert not (tmp_path / "data" / "raw" / "oxford-iiit-pet").exists()

    done = stage(_params(tmp_path, **urls, images_md5=_md5(archives["/pets/images.tar.gz"])))
    assert done.returncode == 0, done.stderr
    check_layout(tmp_path / "data" / "raw" / "oxford-iiit-pet")
    assert sorted(p.name for p in (tmp_path / "data" / "downloads").iterdir()) == [
        "annotations.tar.gz",
        "images.tar.gz",
    ]
