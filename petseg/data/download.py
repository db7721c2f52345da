"""The download stage: put the raw dataset in place, from the official archives or the synthetic generator.

Official archives are fetched, verified and extracted with
``torchvision.datasets.utils`` (the same code torchvision's OxfordIIITPet
uses), with three guarantees on top:

- an archive is downloaded to a temporary name and only renamed to its real
  name once its md5 matches, so a file under the real name is always valid
  and is never downloaded again;
- a mismatch is a DataError naming the file and both md5s, and the bad bytes
  are deleted;
- extraction happens in a temporary sibling of the raw folder, whose layout is
  checked before it replaces the raw folder, so a corrupt or interrupted
  extraction never leaves a half-extracted folder that later stages would take
  for complete (and never destroys a previous good one).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import posixpath
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from petseg.data import synthetic
from petseg.data.layout import building_dir, missing_parts
from petseg.errors import DataError, ParamsError
from petseg.io import TEMP_MARK, remove_stale_temps

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "oxford-iiit-pet")


def archive_name(url: str) -> str:
    """The file name an archive is kept under: the last part of the URL's path."""
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if not name or name in (".", ".."):
        raise ParamsError(f"{url}: the URL does not end in a file name (e.g. .../images.tar.gz)")
    return name


def fetch_archive(url: str, md5: str, downloads_dir: str | Path, filename: str | None = None) -> Path:
    """Return the path of a verified copy of the archive at ``url``, downloading it only if needed.

    A file already in ``downloads_dir`` under its name with the right md5 is
    used as is (no network). Otherwise the archive is downloaded (with a
    progress bar) to a temporary name, checked, and renamed into place.
    """
    from torchvision.datasets.utils import calculate_md5, check_integrity, download_url

    downloads_dir = Path(downloads_dir)
    downloads_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(downloads_dir)
    md5 = md5.lower()
    final = downloads_dir / (filename or archive_name(url))
    if final.is_file():
        if check_integrity(final, md5):
            log.info("%s: present and valid (md5 %s), not downloaded again", final, md5)
            return final
        log.info("%s: present but its md5 is not %s; downloading it again", final, md5)
    partial = downloads_dir / f".{final.name}{TEMP_MARK}{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # download_url skips files that already exist
    log.info("downloading %s -> %s", url, final)
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file":  # torchvision's downloader handles http(s) only
            shutil.copyfile(urllib.request.url2pathname(parts.path), partial)
        else:
            download_url(url, str(downloads_dir), filename=partial.name, md5=None)
        if not partial.is_file():
            raise DataError(f"{url}: the download produced no file")
        actual = calculate_md5(partial)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, RuntimeError) as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise DataError(f"{url}: download failed: {exc}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    if actual != md5:
        partial.unlink()
        raise DataError(
            f"{final}: md5 mismatch for {url}: expected {md5}, got {actual} "
            "(corrupt or incomplete download, or a wrong md5 in params.yaml); the file was deleted"
        )
    os.replace(partial, final)
    return final


def extract_raw(archives: list[Path], raw_dir: str | Path) -> Path:
    """Extract ``archives`` together and make the result ``raw_dir``, only if it has the official layout."""
    from torchvision.datasets.utils import extract_archive

    raw_dir = Path(raw_dir)
    with building_dir(raw_dir) as temp:
        for archive in archives:
            log.info("extracting %s", archive)
            try:
                extract_archive(str(archive), str(temp))
            except Exception as exc:  # noqa: BLE001 - tarfile, zipfile, gzip, lzma, zlib: each its own kinds
                raise DataError(
                    f"{archive}: cannot extract (corrupt or truncated archive?): {type(exc).__name__}: {exc}"
                ) from None
        missing = missing_parts(temp)
        if missing:
            names = ", ".join(str(archive) for archive in archives)
            raise DataError(
                f"{names}: the archives do not hold the Oxford-IIIT Pet layout; missing: {', '.join(missing)}; "
                f"{raw_dir} was left as it was"
            )
    log.info("raw data ready in %s", raw_dir)
    return raw_dir


def download_oxford_pet(
    raw_dir: str | Path,
    downloads_dir: str | Path,
    *,
    images_url: str,
    images_md5: str,
    annotations_url: str,
    annotations_md5: str,
) -> Path:
    """Fetch (if needed), verify and extract the two official archives into ``raw_dir``."""
    images_name, annotations_name = archive_name(images_url), archive_name(annotations_url)
    if images_name == annotations_name:
        images_name, annotations_name = f"images-{images_name}", f"annotations-{annotations_name}"
    archives = [
        fetch_archive(images_url, images_md5, downloads_dir, images_name),
        fetch_archive(annotations_url, annotations_md5, downloads_dir, annotations_name),
    ]
    return extract_raw(archives, raw_dir)


def prepare_raw(
    source: str,
    raw_dir: str | Path,
    downloads_dir: str | Path,
    *,
    images_urls: list[str],
    images_md5: str,
    annotations_urls: list[str],
    annotations_md5: str,
    n_trainval: int,
    n_test: int,
    seed: int,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Build ``raw_dir`` from ``source`` (``synthetic`` or ``oxford-iiit-pet``); the download stage's one call."""
    if source == "synthetic":
        return synthetic.generate(raw_dir, n_trainval, n_test, seed, workers=workers, progress=progress)
    if source == "oxford-iiit-pet":
        return download_oxford_pet(
            raw_dir,
            downloads_dir,
            images_url=images_urls[0],
            images_md5=images_md5,
            annotations_url=annotations_urls[0],
            annotations_md5=annotations_md5,
        )
    raise ParamsError(f"data.source = {source!r} is invalid; allowed: {', '.join(SOURCES)}")
