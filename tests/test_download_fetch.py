"""Resumable, retried downloads from mirrors (petseg.data.fetch), against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from petseg.data import fetch
from petseg.data.download import fetch_archive
from petseg.errors import DataError
from tests.archiveserver import CUT, IGNORE_RANGE, STALL, Server, md5

BODY = random.Random(14).randbytes(300_001)  # odd length: the middle is not a round number
PATH = "/pets/data.bin"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    """Two servers (two mirrors), each holding the file at PATH."""
    pair = (Server(), Server())
    for server in pair:
        server.files[PATH] = BODY
    yield pair
    for server in pair:
        server.stop()


@pytest.fixture()
def mirrors(servers: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch) -> tuple[Server, Server]:
    """The two servers with fresh request logs and no scripted failures; retries wait (almost) nothing."""
    for server in servers:
        server.reset()
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.001)
    return servers


@pytest.fixture()
def server(mirrors: tuple[Server, Server]) -> Server:
    return mirrors[0]


def _get(urls: list[str], tmp_path: Path, digest: str = md5(BODY), progress: bool = False) -> Path:
    return fetch_archive(urls, digest, tmp_path / "downloads", progress=progress)


def _intact(tmp_path: Path) -> bool:
    """The file is in place, whole, and no partial file is left."""
    downloads = tmp_path / "downloads"
    return (downloads / "data.bin").read_bytes() == BODY and sorted(p.name for p in downloads.iterdir()) == ["data.bin"]


def test_a_dropped_connection_is_resumed_with_range(server: Server, tmp_path: Path) -> None:
    server.plans[PATH] = [CUT]  # the first answer stops half-way, once
    _get([server.url(PATH)], tmp_path)
    assert server.requests == [(PATH, None), (PATH, f"bytes={len(BODY) // 2}-")]
    assert len(BODY) // 2 > 0 and _intact(tmp_path)


def test_a_server_that_ignores_range_restarts_from_zero(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.plans[PATH] = [CUT]
    server.always[PATH] = IGNORE_RANGE  # then answers 200 with the whole file, whatever was asked
    with caplog.at_level(logging.INFO, logger="petseg"):
        _get([server.url(PATH)], tmp_path)
    assert server.requests == [(PATH, None), (PATH, f"bytes={len(BODY) // 2}-")]
    assert "ignores Range requests; restarting from 0" in caplog.text
    assert _intact(tmp_path)  # not the first half followed by the whole file


@pytest.mark.parametrize("codes", [["503"], ["500", "502", "429"], ["408"]])
def test_server_errors_are_retried(server: Server, tmp_path: Path, codes: list[str]) -> None:
    server.plans[PATH] = list(codes)
    _get([server.url(PATH)], tmp_path)
    assert server.requests == [(PATH, None)] * (len(codes) + 1)
    assert _intact(tmp_path)


def test_a_stalled_transfer_times_out_and_resumes(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "TIMEOUT_S", 0.5)
    server.plans[PATH] = [STALL]  # half the file, then silence with the connection open
    _get([server.url(PATH)], tmp_path)
    assert server.requests == [(PATH, None), (PATH, f"bytes={len(BODY) // 2}-")]
    assert _intact(tmp_path)


def test_a_404_moves_to_the_next_mirror_and_the_log_names_it(
    mirrors: tuple[Server, Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = mirrors
    urls = [first.url("/moved/data.bin"), second.url(PATH)]
    with caplog.at_level(logging.INFO, logger="petseg"):
        _get(urls, tmp_path)
    assert first.requests == [("/moved/data.bin", None)]  # a 404 is not retried
    assert second.requests == [(PATH, None)]
    assert f"{len(BODY)} bytes served by {urls[1]}" in caplog.text
    assert f"served by {urls[0]}" not in caplog.text
    assert _intact(tmp_path)


def test_repeated_failure_moves_on_and_the_next_mirror_continues_the_bytes(
    mirrors: tuple[Server, Server], tmp_path: Path
) -> None:
    first, second = mirrors
    first.always[PATH] = CUT  # never gets past the middle
    _get([first.url(PATH), second.url(PATH)], tmp_path)
    half = f"bytes={len(BODY) // 2}-"
    assert first.requests == [(PATH, None)] + [(PATH, half)] * fetch.ATTEMPTS
    assert second.requests == [(PATH, half)]
    assert _intact(tmp_path)


def test_a_host_that_refuses_connections_is_retried_then_left(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as closed:  # a port nothing listens on (bound, then released)
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refusing = f"http://127.0.0.1:{port}{PATH}"
    with caplog.at_level(logging.INFO, logger="petseg"):
        _get([refusing, server.url(PATH)], tmp_path)
    assert caplog.text.count(f"{refusing}: ConnectionRefusedError") == fetch.ATTEMPTS - 1  # the retries
    assert f"{fetch.ATTEMPTS} attempts in a row failed" in caplog.text and "trying the next URL" in caplog.text
    assert server.requests == [(PATH, None)] and _intact(tmp_path)


def test_when_every_mirror_fails_one_line_lists_each(mirrors: tuple[Server, Server], tmp_path: Path) -> None:
    first, second = mirrors
    second.always[PATH] = "503"
    urls = [first.url("/moved/data.bin"), second.url(PATH)]
    with pytest.raises(DataError) as caught:
        _get(urls, tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'downloads' / 'data.bin'}: download failed from every URL: {urls[0]} (HTTP Error 404: Not Found);"
        f" {urls[1]} ({fetch.ATTEMPTS} attempts in a row failed, the last: HTTP Error 503: Service Unavailable)"
    )
    assert len(second.requests) == fetch.ATTEMPTS
    assert list((tmp_path / "downloads").iterdir()) == []


def test_data_of_unannounced_length_cut_short_is_continued(server: Server, tmp_path: Path) -> None:
    server.no_length.add(PATH)  # the end of the data is where the connection closes: a cut looks like the end
    server.plans[PATH] = [CUT]
    _get([server.url(PATH)], tmp_path)
    assert server.requests == [(PATH, None), (PATH, f"bytes={len(BODY) // 2}-")]
    assert _intact(tmp_path)


def test_data_of_unannounced_length_with_the_wrong_md5_is_a_mismatch(server: Server, tmp_path: Path) -> None:
    server.no_length.add(PATH)
    with pytest.raises(DataError, match=f"md5 mismatch for {server.url(PATH)}: expected {'0' * 32}, got {md5(BODY)}"):
        _get([server.url(PATH)], tmp_path, digest="0" * 32)
    assert server.requests == [(PATH, None), (PATH, f"bytes={len(BODY)}-")]  # asked for more; 416: nothing more
    assert list((tmp_path / "downloads").iterdir()) == []


def test_a_complete_partial_file_is_checked_and_used(server: Server, tmp_path: Path) -> None:
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "data.bin.part").write_bytes(BODY)  # a run killed between the last byte and the rename
    _get([server.url(PATH)], tmp_path)
    assert server.requests == [(PATH, f"bytes={len(BODY)}-")]  # answered 416: nothing left to send
    assert _intact(tmp_path)


def test_a_partial_file_longer_than_the_file_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "data.bin.part").write_bytes(BODY + b"left over from another file")
    _get([server.url(PATH)], tmp_path)
    assert server.requests == [(PATH, f"bytes={len(BODY) + 27}-"), (PATH, None)]
    assert _intact(tmp_path)


def test_a_resumed_file_with_the_wrong_md5_is_deleted(server: Server, tmp_path: Path) -> None:
    (tmp_path / "downloads").mkdir()
    part = tmp_path / "downloads" / "data.bin.part"
    part.write_bytes(b"\0" * 1000)  # bytes that are not the start of this file
    corrupt = b"\0" * 1000 + BODY[1000:]
    with pytest.raises(DataError) as caught:
        _get([server.url(PATH)], tmp_path)
    assert str(caught.value).startswith(
        f"{tmp_path / 'downloads' / 'data.bin'}: md5 mismatch for {server.url(PATH)}: "
        f"expected {md5(BODY)}, got {md5(corrupt)} "
    )
    assert "the downloaded file was deleted" in str(caught.value) and "\n" not in str(caught.value)
    assert server.requests == [(PATH, "bytes=1000-")]
    assert list((tmp_path / "downloads").iterdir()) == []
    _get([server.url(PATH)], tmp_path)  # the next run starts from 0
    assert server.requests[1] == (PATH, None) and _intact(tmp_path)


def test_a_local_file_mirror_serves_after_a_failing_host(server: Server, tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "data.bin").write_bytes(BODY)
    missing = (tmp_path / "nowhere" / "data.bin").as_uri()
    _get([server.url("/moved/data.bin"), missing, (tmp_path / "mirror" / "data.bin").as_uri()], tmp_path)
    assert _intact(tmp_path)


def test_the_progress_bar_counts_bytes_and_can_be_turned_off(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _get([server.url(PATH)], tmp_path / "on", progress=True)
    shown = capsys.readouterr().err
    assert "data.bin" in shown and "B/s" in shown
    _get([server.url(PATH)], tmp_path / "off", progress=False)
    assert capsys.readouterr().err == ""
