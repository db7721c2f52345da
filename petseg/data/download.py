"""The download stage: put the raw dataset in place, from the official archives or the synthetic generator.

The official archives come with these guarantees:

- a file under an archive's real name in the downloads folder is always a
  verified one: a valid archive already there is used with no network request;
  otherwise it is fetched (resumably, with retries, from a list of mirrors: see
  :mod:`petseg.data.fetch`) into ``<name>.part`` and renamed only once its md5
  matches. A mismatch is a DataError naming the file, the URL and both md5s;
- every member of both archives is checked before anything is extracted, and
  nothing may land outside the extraction folder (see :mod:`petseg.data.archives`);
- extraction happens in a temporary sibling of the raw folder, whose layout is
  checked before it replaces the raw folder, so a refused, corrupt or
  interrupted extraction never leaves a half-extracted folder that later stages
  would take for complete (and never touches a previous good one).
"""

from __future__ import annotations

import logging
import posixpath
import urllib.parse
from pathlib import Path

from petseg.data import synthetic
from petseg.data.archives import open_checked
from petseg.data.fetch import fetch, file_md5
from petseg.data.layout import building_dir, missing_parts
from petseg.errors import DataError, ParamsError
from petseg.io import remove_stale_temps
from petseg.params import DataParams

log = logging.getLogger(__name__)


def archive_name(url: str) -> str:
    """The file name an archive is kept under: the last part of the URL's path."""
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if not name or name in (".", ".."):
        raise ParamsError(f"{url}: the URL does not end in a file name (e.g. .../images.tar.gz)")
    return name


def _url_list(urls: str | list[str], md5: str) -> list[str]:
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ParamsError(f"no URL given for the archive with md5 {md5}")
    return urls


def fetch_archive(
    urls: str | list[str],
    md5: str,
    downloads_dir: str | Path,
    filename: str | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Return the path of a verified copy of the archive that ``urls`` (mirrors, tried in order) serve.

    A file already in ``downloads_dir`` under its name (``filename``, else the
    first URL's) with the right md5 is used as is, with no network request.
    """
    urls = _url_list(urls, md5)
    downloads_dir = Path(downloads_dir)
    downloads_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(downloads_dir)  # temporaries of older versions; <name>.part files are kept to resume
    md5 = md5.lower()
    final = downloads_dir / (filename or archive_name(urls[0]))
    if final.is_file():
        if file_md5(final) == md5:
            log.info("%s: present and valid (md5 %s), not downloaded again", final, md5)
            return final
        log.info("%s: present but its md5 is not %s; downloading it again", final, md5)
    fetch(urls, final, md5, progress=progress)
    return final


def extract_raw(archives: list[Path], raw_dir: str | Path) -> Path:
    """Extract ``archives`` together and make the result ``raw_dir``, if every member is safe and the layout official.

    Every member is checked before the temporary folder is even created.
    """
    raw_dir = Path(raw_dir)
    try:
        with open_checked(archives) as checked, building_dir(raw_dir) as temp:
            log.info("extracting %s", ", ".join(str(archive) for archive in archives))
            checked.extract_to(temp)
            missing = missing_parts(temp)
            if missing:
                names = ", ".join(str(archive) for archive in archives)
                raise DataError(
                    f"{names}: the archives do not hold the Oxford-IIIT Pet layout; missing: {', '.join(missing)}"
                )
    except DataError as exc:
        raise DataError(f"{exc}; {raw_dir} was left as it was") from None
    log.info("raw data ready in %s", raw_dir)
    return raw_dir


def download_oxford_pet(
    raw_dir: str | Path,
    downloads_dir: str | Path,
    *,
    images_urls: list[str],
    images_md5: str,
    annotations_urls: list[str],
    annotations_md5: str,
    progress: bool = True,
) -> Path:
    """Fetch (if needed), verify and extract the two official archives into ``raw_dir``.

    Each archive has a list of URLs (mirrors tried in order); its file name comes from the first.
    """
    images_urls, annotations_urls = _url_list(images_urls, images_md5), _url_list(annotations_urls, annotations_md5)
    images_name, annotations_name = archive_name(images_urls[0]), archive_name(annotations_urls[0])
    if images_name == annotations_name:
        images_name, annotations_name = f"images-{images_name}", f"annotations-{annotations_name}"
    archives = [
        fetch_archive(images_urls, images_md5, downloads_dir, images_name, progress=progress),
        fetch_archive(annotations_urls, annotations_md5, downloads_dir, annotations_name, progress=progress),
    ]
    return extract_raw(archives, raw_dir)


def prepare_raw(
    data: DataParams, raw_dir: str | Path, downloads_dir: str | Path, *, workers: int = 0, progress: bool = True
) -> Path:
    """Build ``raw_dir`` from ``data.source`` (synthetic or the official archives); the download stage's one call."""
    if data.source == "synthetic":
        return synthetic.generate(
            raw_dir, data.synthetic.n_trainval, data.synthetic.n_test, data.seed, workers=workers, progress=progress
        )
    return download_oxford_pet(
        raw_dir,
        downloads_dir,
        images_urls=list(data.images_url),
        images_md5=data.images_md5,
        annotations_urls=list(data.annotations_url),
        annotations_md5=data.annotations_md5,
        progress=progress,
    )
