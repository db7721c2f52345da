"""The preprocess stage: broken files, the split rule, binarization, the cache format, the stage script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petseg.data.cache import SPLITS, load_split
from petseg.data.preprocess import preprocess, split_names
from petseg.errors import DataError
from tests.brokenraw import CASES, PREFIX_ONLY, TEST, TRAINVAL, Raw, build_broken_raw
from tests.paramsfile import write_params

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "oxford-pet-sample"
SIZE = 32


def _official(trainval: list[str], test: list[str], every: int) -> dict[str, list[str]]:
    """The split rule written out independently: positions 0, every, 2*every, ... are validation."""
    val = [trainval[i] for i in range(0, len(trainval), every)]
    return {"train": [n for n in trainval if n not in val], "val": val, "test": list(test)}


def _expected_arrays(raw: Raw, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Plain PIL, no draft, no EXIF rotation, alpha on white: the reference the cache must match exactly."""
    with Image.open(raw.image(name)) as image:
        if image.mode.startswith("I"):
            image = Image.fromarray((np.asarray(image) // 257).astype(np.uint8))
        if image.mode == "RGBA":
            image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
        expected_image = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    with Image.open(raw.trimap(name)) as trimap:
        expected_trimap = np.asarray(trimap.resize((SIZE, SIZE), Image.NEAREST))
    return expected_image, expected_trimap


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Raw, Path, dict]:
    root = tmp_path_factory.mktemp("broken")
    raw = build_broken_raw(root / "raw")
    result = preprocess(raw.root, root / "cache", image_size=SIZE, workers=2, jpeg_draft=False, progress=False)
    return raw, root / "cache", result.report


# ------------------------------------------------------------------------ tests


def test_broken_files_cached_names(broken: tuple[Raw, Path, dict]) -> None:
    _, cache, report = broken
    skipped = {name for name, (_, kind, _) in CASES.items() if kind == "skipped"}
    expected = {split: [n for n in names if n not in skipped] for split, names in _official(TRAINVAL, TEST, 10).items()}
    assert expected["val"] == ["good_00", "rgba"]  # missing_trimap (position 20) was skipped
    for split in SPLITS:
        assert (cache / split / "names.txt").read_text().splitlines() == expected[split]
        assert report["counts"][split] == len(expected[split])
    assert report["listed"] == {split: len(names) for split, names in _official(TRAINVAL, TEST, 10).items()}
    everything = {n for split in SPLITS for n in (cache / split / "names.txt").read_text().split()}
    assert not everything & {"unlisted", "._good_00", "good_00.mat"}
    assert report["ignored_files"] == {"images": 3, "trimaps": 2}


def test_broken_files_report(broken: tuple[Raw, Path, dict]) -> None:
    raw, cache, report = broken
    on_disk = json.loads((cache / "report.json").read_text())
    assert on_disk == report
    assert report["source"] == str(raw.root) and report["image_size"] == SIZE and report["split"] == "official"
    split_of = {n: s for s, names in _official(TRAINVAL, TEST, 10).items() for n in names}
    for kind in ("converted", "skipped"):
        entries = report[kind]
        expected_names = [n for n in TRAINVAL + TEST if n in CASES and CASES[n][1] == kind]
        assert sorted(e["name"] for e in entries) == sorted(expected_names), kind
        for entry in entries:
            assert set(entry) == {"name", "split", "reason"}
            assert entry["split"] == split_of[entry["name"]]
            reason = CASES[entry["name"]][2]
            if entry["name"] in PREFIX_ONLY:
                assert entry["reason"].startswith(reason), entry
            else:
                assert entry["reason"] == reason, entry


def test_cached_arrays_match_plain_pil(broken: tuple[Raw, Path, dict]) -> None:
    raw, cache, _ = broken
    for split in SPLITS:
        data = load_split(cache, split)
        assert data.images.shape == (len(data), SIZE, SIZE, 3)
        for i, name in enumerate(data.names):
            expected_image, expected_trimap = _expected_arrays(raw, name)
            np.testing.assert_array_equal(data.images[i], expected_image, err_msg=name)
            np.testing.assert_array_equal(data.trimaps[i], expected_trimap, err_msg=name)
            np.testing.assert_array_equal(data.masks[i], (expected_trimap != 2).astype(np.uint8), err_msg=name)
            assert set(np.unique(data.masks[i]).tolist()) <= {0, 1}


def test_npy_files_are_exact(broken: tuple[Raw, Path, dict]) -> None:
    """Skipped rows were compacted away: header row count and file size match the names."""
    _, cache, _ = broken
    for split in SPLITS:
        n = len((cache / split / "names.txt").read_text().splitlines())
        for array, row in (("images", SIZE * SIZE * 3), ("masks", SIZE * SIZE), ("trimaps", SIZE * SIZE)):
            path = cache / split / f"{array}.npy"
            loaded = np.load(path, allow_pickle=False)
            assert loaded.shape[0] == n and loaded.dtype == np.uint8
            with open(path, "rb") as handle:
                assert np.lib.format.read_magic(handle) == (1, 0)
                np.lib.format.read_array_header_1_0(handle)
                header = handle.tell()
            assert os.path.getsize(path) == header + n * row
        assert not [p for p in (cache / split).iterdir() if p.name.startswith(".")]


def test_exif_orientation_is_not_applied(broken: tuple[Raw, Path, dict]) -> None:
    raw, cache, _ = broken
    with Image.open(raw.image("exif_rotated")) as image:
        assert image.getexif().get(0x0112) == 6
    train = load_split(cache, "train")
    assert "exif_rotated" in train.names  # its 120x80 trimap matched the stored (unrotated) 120x80 pixels


def test_draft_mode_and_workers(broken: tuple[Raw, Path, dict], tmp_path: Path) -> None:
    raw, cache, report = broken
    single = preprocess(raw.root, tmp_path / "single", image_size=SIZE, workers=1, jpeg_draft=False, progress=False)
    preprocess(raw.root, tmp_path / "draft", image_size=SIZE, workers=2, jpeg_draft=True, progress=False)
    assert single.report["converted"] == report["converted"] and single.report["skipped"] == report["skipped"]
    differs = 0
    for split in SPLITS:
        reference, one, draft = (
            load_split(cache, split),
            load_split(tmp_path / "single", split),
            load_split(tmp_path / "draft", split),
        )
        assert one.names == reference.names == draft.names
        np.testing.assert_array_equal(one.images, reference.images)
        np.testing.assert_array_equal(draft.trimaps, reference.trimaps)
        np.testing.assert_array_equal(draft.masks, reference.masks)
        gap = np.abs(draft.images.astype(int) - reference.images.astype(int))
        assert gap.mean() < 4, (split, gap.mean())
        differs += int(gap.any())
    assert differs  # draft decoding really happened (JPEGs here are >= 2x the target side)


def test_split_rule_official_and_random() -> None:
    trainval = [f"a_{i}" for i in range(23)]
    test = [f"b_{i}" for i in range(7)]
    for every in (2, 3, 10, 50):
        assert split_names(trainval, test, split="official", val_every=every) == _official(trainval, test, every)
    first = split_names(trainval, test, split="random", fractions=[0.6, 0.2, 0.2], seed=5)
    assert [len(first[s]) for s in SPLITS] == [18, 6, 6]
    assert sorted(first["train"] + first["val"] + first["test"]) == sorted(trainval + test)
    assert first == split_names(trainval, test, split="random", fractions=[0.6, 0.2, 0.2], seed=5)
    assert first != split_names(trainval, test, split="random", fractions=[0.6, 0.2, 0.2], seed=6)
    mixed = set(first["test"]) & set(trainval)
    assert mixed  # the random protocol draws test from all listed names


def test_random_split_end_to_end(broken: tuple[Raw, Path, dict], tmp_path: Path) -> None:
    raw, _, _ = broken
    result = preprocess(
        raw.root,
        tmp_path / "cache",
        image_size=SIZE,
        split="random",
        split_fractions=[0.5, 0.25, 0.25],
        seed=1,
        workers=2,
        progress=False,
    )
    planned = split_names(TRAINVAL, TEST, split="random", fractions=[0.5, 0.25, 0.25], seed=1)
    skipped = {e["name"] for e in result.report["skipped"]}
    for split in SPLITS:
        assert load_split(tmp_path / "cache", split).names == [n for n in planned[split] if n not in skipped]
    assert result.report["split"] == "random" and result.report["split_fractions"] == [0.5, 0.25, 0.25]


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("good_00 1 1 1 1", "expected 'NAME CLASS_ID SPECIES BREED_ID'"),
        ("good_00 1 x 1", "must be integers"),
        ("good_00 1 3 1", "SPECIES must be 1 (cat) or 2 (dog)"),
        ("../etc/passwd 1 1 1", "not a valid image name"),
        ("good_t0 1 1 1", "listed twice"),
    ],
)
def test_malformed_list_line_names_file_and_line(tmp_path: Path, line: str, complaint: str) -> None:
    raw = Raw(tmp_path / "raw")
    for name in ("good_00", "good_01", "good_t0"):
        raw.pair(name)
    raw.lists(["good_t0", "good_01"], ["good_00"])
    trainval = raw.root / "annotations" / "trainval.txt"
    trainval.write_text(trainval.read_text() + "\n" + line + "\n")  # blank line 3 is fine; line 4 is not
    with pytest.raises(DataError) as caught:
        preprocess(raw.root, tmp_path / "cache", image_size=SIZE, workers=1, progress=False)
    message = str(caught.value)
    assert f"{trainval}, line 4" in message and complaint in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))


def test_empty_split_is_an_error_and_keeps_the_old_cache(tmp_path: Path) -> None:
    raw = Raw(tmp_path / "raw")
    for name in ("a", "b", "c", "d"):
        raw.pair(name)
    raw.lists(["a", "b", "c"], ["d"])
    cache = tmp_path / "cache"
    preprocess(raw.root, cache, image_size=SIZE, workers=1, progress=False)
    before = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    raw.image("d").write_bytes(b"")  # the only test pair is now broken
    with pytest.raises(DataError, match="test split empty"):
        preprocess(raw.root, cache, image_size=SIZE, workers=2, progress=False)
    after = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    assert after == before  # old cache whole, no temporary files left


def test_list_leaving_a_split_empty_is_an_error(tmp_path: Path) -> None:
    raw = Raw(tmp_path / "raw")
    raw.pair("a")
    raw.pair("b")
    raw.lists(["a"], ["b"])  # one trainval name: it goes to val, train is empty
    with pytest.raises(DataError, match="train split is empty"):
        preprocess(raw.root, tmp_path / "cache", image_size=SIZE, progress=False)


def test_missing_raw_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run the download stage"):
        preprocess(tmp_path / "nowhere", tmp_path / "cache", image_size=SIZE, progress=False)
    (tmp_path / "half" / "images").mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"missing: annotations/trimaps/, annotations/trainval.txt, annotations/test.txt"
    ):
        preprocess(tmp_path / "half", tmp_path / "cache", image_size=SIZE, progress=False)


def test_shared_oxford_pet_sample(tmp_path: Path) -> None:
    """Real files: the GIF named .jpg is unlisted (ignored); counts follow the list files."""
    if not SAMPLE.is_dir():
        pytest.skip(f"{SAMPLE} not present")
    trainval = [
        line.split()[0] for line in (SAMPLE / "annotations" / "trainval.txt").read_text().splitlines() if line.strip()
    ]
    test = [line.split()[0] for line in (SAMPLE / "annotations" / "test.txt").read_text().splitlines() if line.strip()]
    expected = _official(trainval, test, 10)
    result = preprocess(SAMPLE, tmp_path / "cache", image_size=64, val_every=10, workers=2, progress=False)
    report = result.report
    assert [report["counts"][s] for s in SPLITS] == [len(expected[s]) for s in SPLITS]
    assert sum(report["counts"].values()) == len(trainval) + len(test) == 199  # the sample's README: 191 + 8
    assert report["skipped"] == [] and report["converted"] == []
    assert report["ignored_files"]["images"] == 1  # Abyssinian_34.jpg, a GIF in no list
    sample = Raw.__new__(Raw)
    sample.root = SAMPLE
    for split in SPLITS:
        data = load_split(tmp_path / "cache", split)
        assert data.names == expected[split]
        assert "Abyssinian_34" not in data.names
        for i, name in enumerate(data.names):
            with Image.open(sample.trimap(name)) as trimap:
                reference = np.asarray(trimap.resize((64, 64), Image.NEAREST))
            np.testing.assert_array_equal(data.trimaps[i], reference)
            np.testing.assert_array_equal(data.masks[i], reference != 2)
    # Listed, the all-background GIF becomes an all-zero mask and an RGB image.
    copy = tmp_path / "sample"
    (copy / "annotations" / "trimaps").mkdir(parents=True)
    (copy / "images").mkdir()
    for name in trainval[:3] + test[:1] + ["Abyssinian_34"]:
        (copy / "images" / f"{name}.jpg").write_bytes((SAMPLE / "images" / f"{name}.jpg").read_bytes())
        (copy / "annotations" / "trimaps" / f"{name}.png").write_bytes(
            (SAMPLE / "annotations" / "trimaps" / f"{name}.png").read_bytes()
        )
    Raw(copy).lists(trainval[:3], test[:1] + ["Abyssinian_34"])
    listed = preprocess(copy, tmp_path / "listed", image_size=64, workers=1, progress=False)
    assert listed.report["converted"] == [
        {
            "name": "Abyssinian_34",
            "split": "test",
            "reason": "GIF file named .jpg; palette image (mode P) converted to RGB",
        }
    ]
    test_split = load_split(tmp_path / "listed", "test")
    gif = test_split.names.index("Abyssinian_34")
    assert not test_split.masks[gif].any() and (test_split.trimaps[gif] == 2).all()


def _params(tmp_path: Path, **data: object) -> Path:
    return write_params(tmp_path / "params.yaml", {f"data.{key}": value for key, value in data.items()})


def test_stage_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    params = _params(tmp_path, image_size=32, synthetic={"n_trainval": 20, "n_test": 4}, seed=7)
    raw, cache = tmp_path / "raw", tmp_path / "cache"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    done = run(str(ROOT / "stages" / "download.py"), "--params", str(params), "--raw-dir", str(raw))
    assert done.returncode == 0, done.stderr
    done = run(
        str(ROOT / "stages" / "preprocess.py"),
        "--params",
        str(params),
        "--raw-dir",
        str(raw),
        "--cache-dir",
        str(cache),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("preprocess: cached 24 of 24 listed pairs at 32x32 (train 18, val 2, test 4)")
    assert [len(load_split(cache, s)) for s in SPLITS] == [18, 2, 4]

    failed = run(
        str(ROOT / "stages" / "preprocess.py"),
        "--params",
        str(params),
        "--raw-dir",
        str(tmp_path / "none"),
        "--cache-dir",
        str(cache),
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().startswith("error: ") and "Traceback" not in failed.stderr
    assert "run the download stage" in failed.stderr
