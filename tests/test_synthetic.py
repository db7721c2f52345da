"""The synthetic source: deterministic, in the official layout, and not solvable by colour."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petseg.data.layout import breeds, read_list
from petseg.data.synthetic import MAX_SIDE, MIN_SIDE, generate

N_TRAINVAL, N_TEST = 60, 20
LINE = re.compile(r"^(\S+) (\d+) ([12]) (\d+)$")


def _files(raw: Path) -> dict[str, bytes]:
    return {str(path.relative_to(raw)): path.read_bytes() for path in sorted(raw.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic") / "raw", N_TRAINVAL, N_TEST, seed=3, workers=2, progress=False)


def _names(raw: Path, listed: str) -> list[str]:
    return [line.split()[0] for line in (raw / "annotations" / listed).read_text().splitlines()]


def test_same_seed_same_bytes_whatever_the_workers(raw: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", N_TRAINVAL, N_TEST, seed=3, workers=1, progress=False)
    assert _files(again) == _files(raw)


def test_different_seed_different_data(raw: Path, tmp_path: Path) -> None:
    other = _files(generate(tmp_path / "other", N_TRAINVAL, N_TEST, seed=4, workers=2, progress=False))
    mine = _files(raw)
    shared = set(mine) & set(other)
    assert all(mine[name] != other[name] for name in shared if name.endswith((".jpg", ".png")))
    assert mine["annotations/trainval.txt"] != other["annotations/trainval.txt"]


def test_official_layout_and_nothing_else(raw: Path) -> None:
    trainval, test = _names(raw, "trainval.txt"), _names(raw, "test.txt")
    assert len(trainval) == N_TRAINVAL and len(test) == N_TEST
    assert not set(trainval) & set(test)
    expected = {"annotations/trainval.txt", "annotations/test.txt"}
    for name in trainval + test:
        expected |= {f"images/{name}.jpg", f"annotations/trimaps/{name}.png"}
    assert set(_files(raw)) == expected
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_list_lines_follow_the_official_format(raw: Path) -> None:
    table = {breed.name: breed for breed in breeds()}
    assert len(table) == 37 and sum(b.species == 1 for b in table.values()) == 12
    for listed in ("trainval.txt", "test.txt"):
        text = (raw / "annotations" / listed).read_text()
        assert text.endswith("\n")
        for line in text.splitlines():
            match = LINE.match(line)
            assert match, line
            name, class_id, species, breed_id = match.group(1), *map(int, match.groups()[1:])
            breed_name, number = name.rsplit("_", 1)
            assert number.isdigit()
            breed = table[breed_name]
            assert (class_id, species, breed_id) == (breed.class_id, breed.species, breed.breed_id)
            assert breed_name[0].isupper() == (species == 1)  # cats Capitalised, dogs lower_case
        read_list(raw / "annotations" / listed)  # and our own parser accepts it


def test_images_and_trimaps(raw: Path) -> None:
    sizes = set()
    for name in _names(raw, "trainval.txt") + _names(raw, "test.txt"):
        with Image.open(raw / "images" / f"{name}.jpg") as image:
            assert (image.format, image.mode) == ("JPEG", "RGB")
            size = image.size
        with Image.open(raw / "annotations" / "trimaps" / f"{name}.png") as trimap:
            assert (trimap.format, trimap.mode) == ("PNG", "L")
            assert trimap.size == size
            values = np.asarray(trimap)
        assert MIN_SIDE <= min(size) and max(size) <= MAX_SIDE
        sizes.add(size)
        assert set(np.unique(values).tolist()) == {1, 2, 3}, name
        # The boundary band (3) separates pet (1) from background (2): they never touch.
        pet, background = values == 1, values == 2
        assert not (pet[1:] & background[:-1]).any() and not (pet[:-1] & background[1:]).any()
        assert not (pet[:, 1:] & background[:, :-1]).any() and not (pet[:, :-1] & background[:, 1:]).any()
        assert 0.01 < (values != 2).mean() < 0.95
    assert len(sizes) > 20
    ratios = [w / h for w, h in sizes]
    assert min(ratios) < 0.8 and max(ratios) > 1.25


def _colour_bins(raw: Path, names: list[str], levels: int = 8) -> tuple[np.ndarray, np.ndarray]:
    keys, pet = [], []
    for name in names:
        with Image.open(raw / "images" / f"{name}.jpg") as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.int64) * levels // 256
        with Image.open(raw / "annotations" / "trimaps" / f"{name}.png") as trimap:
            pet.append((np.asarray(trimap) != 2).ravel())
        keys.append(((rgb[..., 0] * levels + rgb[..., 1]) * levels + rgb[..., 2]).ravel())
    return np.concatenate(keys), np.concatenate(pet)


def _dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))


def test_not_solvable_by_a_colour_threshold(raw: Path) -> None:
    """The best per-colour Bayes rule, fitted on the data itself, barely beats 'everything is pet'."""
    levels = 8
    keys, pet = _colour_bins(raw, _names(raw, "trainval.txt"), levels)
    pet_count = np.bincount(keys, weights=pet, minlength=levels**3)
    total = np.bincount(keys, minlength=levels**3)
    p_pet = pet_count / np.maximum(total, 1)
    fitted, threshold = max((_dice(p_pet[keys] >= t, pet), t) for t in np.linspace(0, 1, 101))
    everything = _dice(np.ones_like(pet), pet)
    assert fitted < everything + 0.12 and fitted < 0.65, (fitted, everything)

    test_keys, test_pet = _colour_bins(raw, _names(raw, "test.txt"), levels)
    held_out = _dice(p_pet[test_keys] >= threshold, test_pet)
    assert held_out < _dice(np.ones_like(test_pet), test_pet) + 0.05, held_out


def test_generation_replaces_a_previous_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    (target / "images").mkdir(parents=True)
    (target / "images" / "stale.jpg").write_bytes(b"old")
    generate(target, 4, 2, seed=1, progress=False)
    assert not (target / "images" / "stale.jpg").exists()
    assert len(list((target / "images").iterdir())) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
