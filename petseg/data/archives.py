"""Safe extraction of tar and zip archives: every member lands inside the extraction folder, or nothing is written.

An archive fetched from a mirror is untrusted input. Before a single member is
written, every member of every archive being extracted together is listed and
checked (:func:`open_checked`); the first offending member is a
:class:`~petseg.errors.DataError` naming the archive and the member. Refused:

- an absolute name (``/etc/x``, ``C:\\x``) or a name with a ``..`` component
  (one that climbs out is reported as such; archives never need any);
- a symbolic or hard link whose target is absolute, climbs out of the
  extraction folder, or passes through another symbolic link;
- any member that lies under a symbolic link (writing through a link is how a
  member escapes even when its name looks harmless);
- device, FIFO and other special members; in zip archives, symbolic links.

Links whose target stays inside the tree (``images/a.jpg -> b.jpg``) are
extracted as links. Names are compared case- and Unicode-insensitively when
looking for links, so a case-insensitive file system cannot alias around the
check. The checks look at names only, so they hold on any Python; where the
standard library has tar extraction filters (``filter="data"``, Python 3.12
and the 3.8-3.11 security releases) extraction also runs under that filter,
which re-checks every path against the real folder and drops special
permission bits and ownership.

Listing a compressed tar reads it once in full, so a truncated or corrupt
archive is also refused before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import re
import stat
import tarfile
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from petseg.errors import DataError
from petseg.io import write_error

HAS_TAR_FILTERS = hasattr(tarfile, "data_filter")  # tests turn it off to run the fallback path
_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"[A-Za-z]:")
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES}


def _parts(name: str) -> list[str]:
    """The components of a member name or link target (both separators), without empty and ``.`` ones."""
    return [part for part in _SEPARATORS.split(name) if part not in ("", ".")]


def _key(parts: list[str]) -> str:
    """A member path as the most lenient file system would see it (case- and normalisation-insensitive)."""
    return "/".join(unicodedata.normalize("NFC", part).casefold() for part in parts)


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name))


def _name_problem(name: str) -> str | None:
    """Why a member name is refused, or None."""
    if _is_absolute(name):
        return "is an absolute path"
    parts = _parts(name)
    if ".." in parts:
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else 1
            if depth < 0:
                return "climbs out of the extraction folder with '..'"
        return "has a '..' component (only plain relative names are extracted)"
    return None


def _target_problem(base: list[str], target: str, links: set[str], *, hard: bool = False) -> str | None:
    """Why a link from folder ``base`` to ``target`` is refused, or None (it resolves inside, through no link).

    Without symbolic links on the way, the name resolves exactly as written,
    so a lexical walk is the real one.
    """
    if not target:
        return "is a link with an empty target"
    if _is_absolute(target):
        return f"links to an absolute path ({target!r})"
    path = list(base)
    for part in _parts(target):
        if path and _key(path) in links:
            return f"links through another symbolic link ({'/'.join(path)!r})"
        if part == "..":
            if not path:
                return f"links outside the extraction folder ({target!r})"
            path.pop()
        else:
            path.append(part)
    if hard and not path:
        return "is a hard link to the extraction folder itself"
    return None


@dataclass
class _Entry:
    """One member as the checks see it, whatever the archive format."""

    name: str
    kind: str  # file, dir, symlink, hardlink, special
    linkname: str = ""
    detail: str = ""


def _tar_entry(member: tarfile.TarInfo) -> _Entry:
    if member.issym():
        return _Entry(member.name, "symlink", member.linkname)
    if member.islnk():
        return _Entry(member.name, "hardlink", member.linkname)
    if member.isdir():
        return _Entry(member.name, "dir")
    if member.isreg():
        return _Entry(member.name, "file")
    what = "a device or FIFO" if member.ischr() or member.isblk() or member.isfifo() else "a special file"
    return _Entry(member.name, "special", detail=f"is {what} (tar type {member.type!r})")


def _zip_entry(info: zipfile.ZipInfo) -> _Entry:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return _Entry(info.filename, "special", detail="is a symbolic link (refused in zip archives)")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return _Entry(info.filename, "special", detail="is a device, FIFO or socket")
    return _Entry(info.filename, "dir" if info.is_dir() else "file")


@dataclass
class _Archive:
    path: Path
    handle: tarfile.TarFile | zipfile.ZipFile
    members: list = field(default_factory=list)
    entries: list[_Entry] = field(default_factory=list)


def _open(path: Path, stack: contextlib.ExitStack) -> _Archive:
    """Open ``path`` and list its members (reading a compressed tar in full); a bad archive is a DataError."""
    try:
        if zipfile.is_zipfile(path):
            handle = stack.enter_context(zipfile.ZipFile(path))
            members = handle.infolist()
            return _Archive(path, handle, members, [_zip_entry(info) for info in members])
        handle = stack.enter_context(tarfile.open(path, "r:*"))  # noqa: SIM115 - the ExitStack closes it
        members = handle.getmembers()
        return _Archive(path, handle, members, [_tar_entry(member) for member in members])
    except Exception as exc:  # noqa: BLE001 - tarfile, zipfile, gzip, bz2, lzma, zlib: each its own kinds
        raise DataError(
            f"{path}: cannot extract (corrupt or truncated archive?): {type(exc).__name__}: {exc}"
        ) from None


def _check(archives: list[_Archive]) -> None:
    """Refuse the first member of any archive that could land outside the folder, or be written through a link."""
    links = {_key(_parts(e.name)) for archive in archives for e in archive.entries if e.kind == "symlink"}
    for archive in archives:
        for entry in archive.entries:
            parts = _parts(entry.name)
            problem = entry.detail or _name_problem(entry.name)
            if problem is None and not parts and entry.kind != "dir":
                problem = "names the extraction folder itself"
            if problem is None:
                under = next((parts[:i] for i in range(1, len(parts)) if _key(parts[:i]) in links), None)
                if under is not None:
                    problem = f"lies under the symbolic link {'/'.join(under)!r}"
            if problem is None and entry.kind == "symlink":
                problem = _target_problem(parts[:-1], entry.linkname, links)
            if problem is None and entry.kind == "hardlink":
                problem = _target_problem([], entry.linkname, links, hard=True)
            if problem is not None:
                raise DataError(f"{archive.path}: refused before extracting anything: member {entry.name!r} {problem}")


def _fallback_mode(member: tarfile.TarInfo) -> None:
    """What the data filter does to permissions, for Pythons without it: no setuid/setgid/sticky, no go+w."""
    if member.isreg() or member.islnk():
        member.mode = (member.mode & 0o755) | 0o600


@dataclass
class CheckedArchives:
    """Archives whose members have all passed the checks; :meth:`extract_to` writes them."""

    archives: list[_Archive]

    def extract_to(self, dest: Path) -> None:
        """Extract every archive, in order, into the (new, empty) folder ``dest``."""
        for archive in self.archives:
            try:
                if isinstance(archive.handle, zipfile.ZipFile):
                    archive.handle.extractall(dest, members=archive.members)
                elif HAS_TAR_FILTERS:
                    archive.handle.extractall(dest, members=archive.members, filter="data")
                else:
                    for member in archive.members:
                        _fallback_mode(member)
                    archive.handle.extractall(dest, members=archive.members)
            except Exception as exc:  # noqa: BLE001 - as in _open, plus the filter's own refusals
                if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
                    raise write_error(dest, exc) from None  # a full disk, not a bad archive
                member = getattr(exc, "tarinfo", None)
                named = f" (member {member.name!r})" if member is not None else ""
                raise DataError(
                    f"{archive.path}: cannot extract{named} (corrupt or truncated archive?): "
                    f"{type(exc).__name__}: {exc}"
                ) from None


@contextlib.contextmanager
def open_checked(paths: list[Path]) -> Iterator[CheckedArchives]:
    """Open the archives at ``paths`` and check every member of all of them, before anything is written.

    They are checked together because they are extracted into one folder: a
    link from one archive must not carry a member of another outside.
    """
    with contextlib.ExitStack() as stack:
        archives = [_open(Path(path), stack) for path in paths]
        _check(archives)
        yield CheckedArchives(archives)
