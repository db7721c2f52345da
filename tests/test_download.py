"""The download stage against a real HTTP server on 127.0.0.1 serving archives built here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from petseg.data import fetch
from petseg.data.download import archive_name, download_oxford_pet
from petseg.data.layout import check_layout
from petseg.data.preprocess import preprocess
from petseg.data.synthetic import generate
from petseg.errors import DataError
from tests.archiveserver import CUT, STALL, Server, md5, tar_gz
from tests.paramsfile import write_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small raw set in the official layout, to pack into archives like the real ones."""
    raw = generate(tmp_path_factory.mktemp("source") / "raw", 12, 4, seed=2, workers=1, progress=False)
    return raw


@pytest.fixture(scope="module")
def archives(source: Path) -> dict[str, bytes]:
    names = [p.stem for p in (source / "images").iterdir()]
    images = tar_gz(
        source, "images", extra={"images/Abyssinian_100.mat": b"MATLAB 5.0", "images/Abyssinian_101.mat": b"MATLAB"}
    )
    annotations = tar_gz(
        source,
        "annotations",
        extra={
            "annotations/trimaps/._" + names[0] + ".png": b"\x00\x05\x16\x07AppleDouble",
            "annotations/xmls/" + names[0] + ".xml": b"<annotation/>",
            "annotations/list.txt": b"#Image CLASS-ID SPECIES BREED ID\n",
        },
    )
    no_lists = tar_gz(source, "annotations", drop={"annotations/trainval.txt", "annotations/test.txt"})
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
def server(serving: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The module's server with a fresh request log and no scripted failures; retries wait (almost) nothing."""
    serving.reset()
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.001)
    return serving


def _fetch(
    server: Server,
    archives: dict[str, bytes],
    tmp_path: Path,
    images: str = "/pets/images.tar.gz",
    annotations: str = "/pets/annotations.tar.gz",
    **md5s: str,
) -> Path:
    return download_oxford_pet(
        tmp_path / "raw",
        tmp_path / "downloads",
        images_urls=[server.url(images)],
        images_md5=md5s.get("images_md5", md5(archives[images])),
        annotations_urls=[server.url(annotations)],
        annotations_md5=md5s.get("annotations_md5", md5(archives[annotations])),
        progress=False,
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
    assert server.requests == [("/pets/images.tar.gz", None), ("/pets/annotations.tar.gz", None)]

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
    actual = md5(archives["/pets/images.tar.gz"])
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
    assert server.paths().count("/pets/images.tar.gz") == 1


def test_an_interrupted_run_continues_where_it_stopped(
    server: Server, archives: dict[str, bytes], tmp_path: Path
) -> None:
    images = archives["/pets/images.tar.gz"]
    half = len(images) // 2
    server.always["/pets/images.tar.gz"] = CUT  # this run never gets past the middle
    with pytest.raises(DataError) as caught:
        _fetch(server, archives, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and server.url("/pets/images.tar.gz") in message
    assert f"the connection closed after {half} of {len(images)} bytes" in message
    part = tmp_path / "downloads" / "images.tar.gz.part"
    assert f"kept in {part}" in message and part.read_bytes() == images[:half]
    assert not (tmp_path / "raw").exists() and not (tmp_path / "downloads" / "images.tar.gz").exists()

    server.reset()  # the next run: the connection holds
    raw = _fetch(server, archives, tmp_path)
    assert server.requests[0] == ("/pets/images.tar.gz", f"bytes={half}-")  # resumed, not restarted
    assert (tmp_path / "downloads" / "images.tar.gz").read_bytes() == images and not part.exists()
    check_layout(raw)


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


def test_a_missing_archive_names_every_url(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    urls = [server.url("/pets/nothing.tar.gz"), server.url("/mirror/nothing.tar.gz")]
    with pytest.raises(DataError) as caught:
        download_oxford_pet(
            tmp_path / "raw", tmp_path / "downloads",
            images_urls=urls, images_md5="0" * 32,
            annotations_urls=[server.url("/pets/annotations.tar.gz")], annotations_md5="0" * 32, progress=False,
        )  # fmt: skip
    assert str(caught.value) == (
        f"{tmp_path / 'downloads' / 'nothing.tar.gz'}: download failed from every URL: "
        f"{urls[0]} (HTTP Error 404: Not Found); {urls[1]} (HTTP Error 404: Not Found)"
    )
    assert server.paths() == ["/pets/nothing.tar.gz", "/mirror/nothing.tar.gz"]  # a 404 is not retried
    assert not (tmp_path / "downloads" / "nothing.tar.gz.part").exists() and _leftovers(tmp_path / "downloads") == []


def test_file_urls_are_copied(archives: dict[str, bytes], tmp_path: Path) -> None:
    """params.yaml accepts file:// URLs (a local mirror); they are copied."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("images.tar.gz", "annotations.tar.gz"):
        (mirror / name).write_bytes(archives[f"/pets/{name}"])
    raw = download_oxford_pet(
        tmp_path / "raw", tmp_path / "downloads",
        images_urls=[(mirror / "images.tar.gz").as_uri()], images_md5=md5(archives["/pets/images.tar.gz"]),
        annotations_urls=[(mirror / "annotations.tar.gz").as_uri()],
        annotations_md5=md5(archives["/pets/annotations.tar.gz"]).upper(),  # md5s are case-insensitive
        progress=False,
    )  # fmt: skip
    check_layout(raw)


def test_archive_name() -> None:
    assert archive_name("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz") == "images.tar.gz"
    assert archive_name("http://127.0.0.1:8000/a%20b/annotations.tar.gz?x=1") == "annotations.tar.gz"


def _params(tmp_path: Path, **data: object) -> Path:
    return write_params(tmp_path / "params.yaml", {f"data.{key}": value for key, value in data.items()})


def _stage(params: Path) -> list[str]:
    """The download stage's command line, as dvc.yaml runs it (from any folder: the project is on PYTHONPATH)."""
    return [sys.executable, "-m", "stages.download", "--params", str(params)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_stage_script_downloads_as_a_subprocess(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    def stage(params: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            _stage(params), check=False, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
        )

    mirrors = [server.url("/gone/images.tar.gz"), server.url("/pets/images.tar.gz")]  # the first answers 404
    urls = {
        "source": "oxford-iiit-pet",
        "images_url": mirrors,
        "annotations_url": server.url("/pets/annotations.tar.gz"),  # one URL, not a list: also accepted
        "annotations_md5": md5(archives["/pets/annotations.tar.gz"]),
    }
    failed = stage(_params(tmp_path, **urls, images_md5="f" * 32))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert (
        f"md5 mismatch for {mirrors[1]}: expected {'f' * 32}, got {md5(archives['/pets/images.tar.gz'])}"
        in failed.stderr
    )
    assert not (tmp_path / "data" / "raw" / "oxford-iiit-pet").exists()

    done = stage(_params(tmp_path, **urls, images_md5=md5(archives["/pets/images.tar.gz"])))
    assert done.returncode == 0, done.stderr
    assert f"served by {mirrors[1]}" in done.stderr and f"served by {urls['annotations_url']}" in done.stderr
    check_layout(tmp_path / "data" / "raw" / "oxford-iiit-pet")
    assert sorted(p.name for p in (tmp_path / "data" / "downloads").iterdir()) == [
        "annotations.tar.gz",
        "images.tar.gz",
    ]


def test_a_killed_stage_resumes_on_the_next_run(server: Server, archives: dict[str, bytes], tmp_path: Path) -> None:
    images = archives["/pets/images.tar.gz"]
    params = _params(
        tmp_path, source="oxford-iiit-pet",
        images_url=server.url("/pets/images.tar.gz"), images_md5=md5(images),
        annotations_url=server.url("/pets/annotations.tar.gz"),
        annotations_md5=md5(archives["/pets/annotations.tar.gz"]),
    )  # fmt: skip
    server.plans["/pets/images.tar.gz"] = [STALL]  # half the file, then silence: the run hangs until killed
    part = tmp_path / "data" / "downloads" / "images.tar.gz.part"
    running = subprocess.Popen(
        _stage(params), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not (part.is_file() and part.stat().st_size == len(images) // 2):
            assert running.poll() is None and time.monotonic() < deadline, "the download never got half-way"
            time.sleep(0.02)
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait()
    assert not (tmp_path / "data" / "downloads" / "images.tar.gz").exists()

    done = subprocess.run(
        _stage(params), check=False, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert server.requests[1] == ("/pets/images.tar.gz", f"bytes={len(images) // 2}-")
    assert (tmp_path / "data" / "downloads" / "images.tar.gz").read_bytes() == images and not part.exists()
    check_layout(tmp_path / "data" / "raw" / "oxford-iiit-pet")
