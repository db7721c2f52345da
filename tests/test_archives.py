"""Safe extraction (petseg.data.archives): hostile tar and zip archives built here are refused before any write."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from petseg.data import archives
from petseg.data.archives import open_checked
from petseg.data.download import extract_raw
from petseg.errors import DataError
from tests.archiveserver import add_file, add_special, md5
from tests.paramsfile import write_params

ROOT = Path(__file__).resolve().parents[1]

Build = Callable[[tarfile.TarFile, Path], None]  # adds members; the Path is a folder outside the extraction


def _tar(path: Path, build: Build, outside: Path) -> Path:
    """A .tar.gz at ``path``: a harmless image first, then what ``build`` adds."""
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, "images/ok.jpg", b"fine")
        build(tar, outside)
    return path


def _zip(path: Path, name: str, data: bytes = b"x", mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images/ok.jpg", b"fine")
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        archive.writestr(info, data)
    return path


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (links not followed), with the bytes of files."""
    return {str(p.relative_to(folder)): None if p.is_dir() or p.is_symlink() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}  # fmt: skip


HOSTILE_TARS: dict[str, tuple[Build, str, str]] = {
    # case: (members added after images/ok.jpg, the member named in the error, what the error says)
    "dotdot": (lambda t, o: add_file(t, "images/../../x.txt", b"x"), "images/../../x.txt", "climbs out"),
    "dotdot-top": (lambda t, o: add_file(t, "../../../x.txt", b"x"), "../../../x.txt", "climbs out"),
    "dotdot-inside": (lambda t, o: add_file(t, "images/../x.txt", b"x"), "images/../x.txt", "'..' component"),
    "absolute": (lambda t, o: add_file(t, str(o / "x.txt"), b"x"), "{outside}/x.txt", "absolute path"),
    "symlink-out": (
        lambda t, o: (add_special(t, "images/up", tarfile.SYMTYPE, "../.."), add_file(t, "images/up/x.txt", b"x")),
        "images/up",
        "links outside the extraction folder",
    ),
    "symlink-absolute": (
        lambda t, o: (add_special(t, "images/up", tarfile.SYMTYPE, str(o)), add_file(t, "images/up/x.txt", b"x")),
        "images/up",
        "links to an absolute path",
    ),
    "hardlink-out": (
        lambda t, o: (
            add_special(t, "images/s.jpg", tarfile.LNKTYPE, "../secret.txt"),
            add_file(t, "images/s.jpg", b"overwritten"),
        ),
        "images/s.jpg",
        "links outside the extraction folder",
    ),
    "hardlink-absolute": (
        lambda t, o: (
            add_special(t, "images/s.jpg", tarfile.LNKTYPE, str(o / "secret.txt")),
            add_file(t, "images/s.jpg", b"overwritten"),
        ),
        "images/s.jpg",
        "links to an absolute path",
    ),
    "link-through-link": (  # each target looks inside, but d2/y/.. is really the folder's parent
        lambda t, o: (
            add_special(t, "d1/d2/y", tarfile.SYMTYPE, "../.."),
            add_special(t, "d1/z", tarfile.SYMTYPE, "d2/y/.."),
            add_file(t, "d1/z/x.txt", b"x"),
        ),
        "d1/z",
        "links through another symbolic link ('d1/d2/y')",
    ),
    "under-a-link-other-case": (
        lambda t, o: (add_special(t, "images/Here", tarfile.SYMTYPE, "."), add_file(t, "images/here/x.txt", b"x")),
        "images/here/x.txt",
        "lies under the symbolic link 'images/here'",
    ),
    "char-device": (lambda t, o: add_special(t, "images/null", tarfile.CHRTYPE), "images/null", "a device or FIFO"),
    "block-device": (lambda t, o: add_special(t, "images/sda", tarfile.BLKTYPE), "images/sda", "a device or FIFO"),
    "fifo": (lambda t, o: add_special(t, "images/pipe", tarfile.FIFOTYPE), "images/pipe", "a device or FIFO"),
}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder with a previous raw folder and a file beside it that a hard link could reach."""
    raw = tmp_path / "data" / "raw" / "oxford-iiit-pet"
    (raw / "images").mkdir(parents=True)
    (raw / "images" / "old.jpg").write_bytes(b"previous data")
    (tmp_path / "data" / "raw" / "secret.txt").write_bytes(b"secret")
    (tmp_path / "data" / "downloads").mkdir()
    return tmp_path


@pytest.mark.parametrize("filters", [True, False], ids=["tar-filters", "no-tar-filters"])
@pytest.mark.parametrize("case", HOSTILE_TARS)
def test_hostile_tar_is_refused_and_nothing_is_written(
    project: Path, case: str, filters: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "HAS_TAR_FILTERS", filters and hasattr(tarfile, "data_filter"))
    build, member, problem = HOSTILE_TARS[case]
    outside = project / "data" / "raw"
    archive = _tar(project / "data" / "downloads" / "images.tar.gz", build, outside)
    before = _tree(project)
    with pytest.raises(DataError) as caught:
        extract_raw([archive], outside / "oxford-iiit-pet")
    message = str(caught.value)
    assert message.startswith(f"{archive}: refused before extracting anything: ") and "\n" not in message
    assert f"member {member.format(outside=outside)!r} " in message and problem in message
    assert message.endswith(f"; {outside / 'oxford-iiit-pet'} was left as it was")
    assert _tree(project) == before  # the raw folder, the secret beside it, no temporary folder, no x.txt
    assert not list(project.rglob("x.txt")) and not (project.parent / "x.txt").exists()


@pytest.mark.parametrize(
    ("name", "mode", "member", "problem"),
    [
        ("../../x.txt", None, "../../x.txt", "climbs out"),
        ("/abs/x.txt", None, "/abs/x.txt", "absolute path"),
        ("C:/x.txt", None, "C:/x.txt", "absolute path"),
        ("images/link", stat.S_IFLNK | 0o777, "images/link", "symbolic link (refused in zip archives)"),
        ("images/pipe", stat.S_IFIFO | 0o644, "images/pipe", "a device, FIFO or socket"),
    ],
)
def test_hostile_zip_is_refused(project: Path, name: str, mode: int | None, member: str, problem: str) -> None:
    archive = _zip(project / "data" / "downloads" / "images.zip", name, b"../../x.txt", mode)
    before = _tree(project)
    with pytest.raises(DataError, match="refused before extracting anything") as caught:
        extract_raw([archive], project / "data" / "raw" / "oxford-iiit-pet")
    message = str(caught.value)
    assert message.startswith(f"{archive}: ") and f"member {member!r} " in message and problem in message
    assert _tree(project) == before


def test_the_check_reads_every_member_before_the_first_is_written(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar.gz", lambda t, o: add_file(t, "../x.txt", b"x"), tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match=r"member '\.\./x\.txt' climbs out"), open_checked([archive]) as checked:
        checked.extract_to(dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "x.txt").exists()  # not even images/ok.jpg


def test_archives_extracted_together_are_checked_together(tmp_path: Path) -> None:
    """Each archive alone is harmless; together, the second's link climbs out through the first's."""
    first = _tar(tmp_path / "images.tar.gz", lambda t, o: add_special(t, "d1/d2/y", tarfile.SYMTYPE, "../.."), tmp_path)
    second = _tar(tmp_path / "annotations.tar.gz", lambda t, o: add_special(t, "d1/z", tarfile.SYMTYPE, "d2/y/.."),
                  tmp_path)  # fmt: skip
    for alone in (first, second):
        with open_checked([alone]):
            pass
    refused = rf"^{second}: .* member 'd1/z' links through another symbolic link"
    with pytest.raises(DataError, match=refused), open_checked([first, second]):
        pass


@pytest.mark.parametrize("filters", [True, False], ids=["tar-filters", "no-tar-filters"])
def test_links_inside_the_tree_are_extracted(tmp_path: Path, filters: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision: links that stay inside (the official archives hold none) are kept, as links."""
    monkeypatch.setattr(archives, "HAS_TAR_FILTERS", filters and hasattr(tarfile, "data_filter"))

    def build(tar: tarfile.TarFile, outside: Path) -> None:
        add_file(tar, "images/b.jpg", b"pixels")
        add_special(tar, "images/a.jpg", tarfile.SYMTYPE, "b.jpg")
        add_special(tar, "annotations/c.jpg", tarfile.SYMTYPE, "../images/b.jpg")
        add_special(tar, "images/d.jpg", tarfile.LNKTYPE, "images/b.jpg")
        info = tarfile.TarInfo("images/run.sh")
        info.mode, info.size = 0o6777, 2  # setuid, setgid, world-writable: dropped
        tar.addfile(info, io.BytesIO(b"hi"))

    archive = _tar(tmp_path / "images.tar.gz", build, tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    with open_checked([archive]) as checked:
        checked.extract_to(dest)
    assert os.readlink(dest / "images" / "a.jpg") == "b.jpg" and (dest / "images" / "a.jpg").read_bytes() == b"pixels"
    assert (dest / "annotations" / "c.jpg").read_bytes() == b"pixels"
    assert (dest / "images" / "d.jpg").stat().st_ino == (dest / "images" / "b.jpg").stat().st_ino
    assert stat.S_IMODE((dest / "images" / "run.sh").stat().st_mode) & 0o7022 == 0
    assert (dest / "images" / "ok.jpg").read_bytes() == b"fine"


def test_a_zip_archive_is_extracted(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "images.zip", "annotations/list.txt", b"names")
    dest = tmp_path / "dest"
    dest.mkdir()
    with open_checked([archive]) as checked:
        checked.extract_to(dest)
    assert _tree(dest) == {"annotations": None, "annotations/list.txt": b"names", "images": None,
                           "images/ok.jpg": b"fine"}  # fmt: skip


def test_a_file_that_is_no_archive_cannot_be_extracted(tmp_path: Path) -> None:
    (tmp_path / "images.tar.gz").write_bytes(b"<html>moved</html>")
    refused = r"images\.tar\.gz: cannot extract \(corrupt or truncated archive\?\)"
    with pytest.raises(DataError, match=refused), open_checked([tmp_path / "images.tar.gz"]):
        pass


def test_the_stage_refuses_a_hostile_archive_with_a_matching_md5(tmp_path: Path) -> None:
    """As a user following a compromised mirror's instructions would run it: the md5 in params matches the archive."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()

    def escape(tar: tarfile.TarFile, outside: Path) -> None:
        add_file(tar, "../../../x.txt", b"planted")

    images = _tar(mirror / "images.tar.gz", escape, tmp_path)
    annotations = _tar(mirror / "annotations.tar.gz", lambda t, o: None, tmp_path)
    params = write_params(tmp_path / "params.yaml", {
        "data.source": "oxford-iiit-pet",
        "data.images_url": [images.as_uri()], "data.images_md5": md5(images.read_bytes()),
        "data.annotations_url": annotations.as_uri(), "data.annotations_md5": md5(annotations.read_bytes()),
    })  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "stages.download", "--params", str(params)]
    run = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    error = run.stderr.splitlines()[-1]
    assert error.startswith("error: ") and "data/downloads/images.tar.gz: refused before extracting anything: " in error
    assert "member '../../../x.txt' climbs out" in error and error.endswith("oxford-iiit-pet was left as it was")
    assert not list(tmp_path.rglob("x.txt")) and not (tmp_path.parent / "x.txt").exists()
    assert not list((tmp_path / "data").glob("raw/*"))  # no raw folder, no temporary one left
