"""The raw Oxford-IIIT Pet layout shared by both sources, and its split lists.

Both data sources (the official archives and the synthetic generator) produce
exactly this layout, so everything after the download stage is one code path::

    <raw>/images/NAME.jpg
    <raw>/annotations/trimaps/NAME.png       L-mode, 1 pet / 2 background / 3 boundary
    <raw>/annotations/trainval.txt           NAME CLASS_ID SPECIES BREED_ID
    <raw>/annotations/test.txt

A raw folder is always built in a temporary sibling and renamed into place only
once complete, so a later stage never mistakes a half-written one for data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from petseg.errors import DataError
from petseg.io import TEMP_MARK, left_by_dead_process, temp_prefix

IMAGES_DIR = "images"
TRIMAPS_DIR = "annotations/trimaps"
TRAINVAL_LIST = "annotations/trainval.txt"
TEST_LIST = "annotations/test.txt"
LIST_FILES = (TRAINVAL_LIST, TEST_LIST)

CAT, DOG = 1, 2
SPECIES_NAMES = {CAT: "cat", DOG: "dog"}

# The 37 breeds of the official release: CLASS_ID is the position in this
# (case-insensitively sorted) list, from 1; cats are Capitalised, dogs lower_case.
BREEDS: tuple[str, ...] = (
    "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
    "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
    "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees",
    "havanese", "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher",
    "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard",
    "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx",
    "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier",
)  # fmt: skip

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class Breed:
    """One breed as the list files describe it."""

    name: str
    class_id: int  # 1..37
    species: int  # 1 cat, 2 dog
    breed_id: int  # 1-based index within the species


def breeds() -> list[Breed]:
    """The 37 official breeds with their CLASS_ID, SPECIES and BREED_ID."""
    result, per_species = [], {CAT: 0, DOG: 0}
    for class_id, name in enumerate(BREEDS, start=1):
        species = CAT if name[0].isupper() else DOG
        per_species[species] += 1
        result.append(Breed(name, class_id, species, per_species[species]))
    return result


@dataclass(frozen=True)
class ListEntry:
    """One line of trainval.txt or test.txt: ``NAME CLASS_ID SPECIES BREED_ID`` (the labels may be absent)."""

    name: str
    class_id: int | None = None  # 1..37, the position in BREEDS
    species: int | None = None  # 1 cat, 2 dog
    breed_id: int | None = None  # 1-based index within the species

    def line(self) -> str:
        return " ".join(str(v) for v in (self.name, self.class_id, self.species, self.breed_id) if v is not None)

    @property
    def breed(self) -> str | None:
        """The breed's name from CLASS_ID (None when absent or unknown)."""
        return BREEDS[self.class_id - 1] if self.class_id is not None and 1 <= self.class_id <= len(BREEDS) else None

    @property
    def species_name(self) -> str | None:
        return SPECIES_NAMES.get(self.species) if self.species is not None else None


def image_path(raw_dir: str | Path, name: str) -> Path:
    return Path(raw_dir) / IMAGES_DIR / f"{name}.jpg"


def trimap_path(raw_dir: str | Path, name: str) -> Path:
    return Path(raw_dir) / TRIMAPS_DIR / f"{name}.png"


def read_list(path: str | Path) -> list[ListEntry]:
    """Parse a split list: ``NAME CLASS_ID SPECIES BREED_ID`` per line, the labels after NAME optional.

    Blank lines and ``#`` comments (as in the official list.txt) are skipped; any
    other malformed line, or a name listed twice, is a DataError naming the file
    and the line number, because a silently dropped line would change the split.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path}: split list not found; the raw data is incomplete (re-run the download stage)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read split list: {exc}") from None
    entries: list[ListEntry] = []
    seen: dict[str, int] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{path}, line {number}"
        if len(fields) > 4:
            raise DataError(f"{where}: expected 'NAME CLASS_ID SPECIES BREED_ID', got {raw_line!r}")
        name = fields[0]
        if not NAME_PATTERN.fullmatch(name):
            raise DataError(f"{where}: {name!r} is not a valid image name (letters, digits, '_', '-', '.')")
        try:
            labels = [int(field) for field in fields[1:]] + [None] * (4 - len(fields))
        except ValueError:
            raise DataError(f"{where}: CLASS_ID, SPECIES and BREED_ID must be integers, got {raw_line!r}") from None
        class_id, species, breed_id = labels
        if species is not None and species not in (CAT, DOG):
            raise DataError(f"{where}: SPECIES must be 1 (cat) or 2 (dog), got {species}")
        if any(value is not None and value < 1 for value in (class_id, breed_id)):
            raise DataError(f"{where}: CLASS_ID and BREED_ID must be >= 1, got {raw_line!r}")
        if name in seen:
            raise DataError(f"{where}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = number
        entries.append(ListEntry(name, class_id, species, breed_id))
    return entries


def write_list(path: str | Path, entries: list[ListEntry]) -> None:
    """Write a split list in the official format (one line per entry, newline-terminated)."""
    Path(path).write_text("".join(entry.line() + "\n" for entry in entries), encoding="utf-8")


def missing_parts(raw_dir: str | Path) -> list[str]:
    """The parts of the official layout that ``raw_dir`` lacks (empty when complete)."""
    raw_dir = Path(raw_dir)
    missing = [part + "/" for part in (IMAGES_DIR, TRIMAPS_DIR) if not (raw_dir / part).is_dir()]
    missing += [part for part in LIST_FILES if not (raw_dir / part).is_file()]
    return missing


def check_layout(raw_dir: str | Path, what: str = "raw data") -> None:
    """Raise a DataError naming every missing part when ``raw_dir`` is not in the official layout."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: {what} folder not found; run the download stage (dvc repro download)")
    missing = missing_parts(raw_dir)
    if missing:
        raise DataError(f"{raw_dir}: {what} is not in the Oxford-IIIT Pet layout; missing: {', '.join(missing)}")


@contextlib.contextmanager
def building_dir(final_dir: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final_dir``; it replaces ``final_dir`` when the block succeeds.

    On an exception (or a kill) the temporary folder is removed (or left under a
    temporary name that :func:`remove_stale_dirs` cleans) and ``final_dir`` is untouched.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_dirs(final_dir)
    temp = Path(tempfile.mkdtemp(prefix=temp_prefix(final_dir.name), dir=final_dir.parent))
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    replace_dir(temp, final_dir)


def replace_dir(new_dir: Path, final_dir: Path) -> None:
    """Put the finished ``new_dir`` at ``final_dir``, moving any old folder aside first."""
    old = None
    if final_dir.exists() or final_dir.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f"{temp_prefix(final_dir.name)}old-", dir=final_dir.parent))
        os.replace(final_dir, old / final_dir.name)
    os.replace(new_dir, final_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_dirs(final_dir: str | Path) -> None:
    """Delete temporary folders left beside ``final_dir`` by a build that was killed (not by one still running)."""
    final_dir = Path(final_dir)
    if final_dir.parent.is_dir():
        for leftover in final_dir.parent.glob(f".{final_dir.name}{TEMP_MARK}*"):
            if leftover.is_dir() and left_by_dead_process(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
