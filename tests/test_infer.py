"""The infer stage on real files of every awkward kind, with a real (tiny) checkpoint."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image, ImageFile

from petseg.checkpoint import load_model
from petseg.data.imaging import read_photo, read_trimap
from petseg.errors import CheckpointError, DataError
from petseg.inference import infer_folder, output_names, resolve_checkpoint, safe_stem
from petseg.plotting.panel import GAP, LABEL_HEIGHT, tile_size
from petseg.training import fit
from tests.cachemaker import write_cache
from tests.paramsfile import default_params, train_params, unet

REPO = Path(__file__).resolve().parents[1]
SAFE_OUTPUT = re.compile(r"[\w.\-]+_(mask|panel)\.png")
CJK_NAME = "貓" * 83 + ".j"  # 251 bytes: fine as an input name, too long in bytes once "_panel.png" is added


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An orange ellipse (the pet) left of centre on a green background, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 3) / (width / 5)) ** 2 <= 1
    image = np.where(inside[..., None], [220, 120, 40], [40, 110, 40]) + rng.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def pet_trimap(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 3) / (width / 5)) ** 2 <= 1
    return np.where(inside, 1, 2).astype(np.uint8)


def panel_size(width: int, height: int, with_truth: bool) -> tuple[int, int]:
    """A panel's size from its parts: 4 tiles (5 with the ground truth) with gaps, under a title and a label line."""
    tiles = 5 if with_truth else 4
    tile_width, tile_height = tile_size(width, height)
    return tiles * tile_width + (tiles - 1) * GAP, 2 * LABEL_HEIGHT + tile_height


def write_png16_rgb(path: Path, array: np.ndarray) -> None:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("infer-model")
    cache = write_cache(root / "cache", {"train": 32, "val": 8}, image_size=32)
    fit(
        "unet",
        unet(base_channels=4, batch_size=8),
        train_params(epochs=2, lr=3e-3, device="cpu"),
        cache,
        root / "models" / "unet",
        live_dir=None,
        progress=False,
    )
    return root / "models" / "unet" / "best.pt"


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/images: every kind of input; root/annotations/trimaps: ground truth for two of them."""
    root = tmp_path_factory.mktemp("messy")
    images = root / "images"
    images.mkdir()
    Image.fromarray(photo(120, 80)).save(images / "normal.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 120x80, displayed rotated 90 degrees clockwise: 80x120
    Image.fromarray(photo(120, 80, seed=1)).save(images / "rotated.jpg", exif=exif)
    Image.fromarray(photo(60, 40)[..., 0].astype(np.uint16) * 257).save(images / "gray16.png")
    write_png16_rgb(images / "rgb16.png", photo(64, 48).astype(np.uint16) * 257)
    Image.fromarray(photo(70, 50)).convert("CMYK").save(images / "cmyk.jpg")
    rgba = Image.fromarray(photo(50, 50)).convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent: shows white
    rgba.save(images / "rgba.png")
    Image.fromarray(photo(50, 40)).convert("P").save(images / "palette.png")
    (images / "empty.jpg").write_bytes(b"")
    whole = (images / "normal.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (images / "notes.jpg").write_text("not an image\n")
    (images / "._normal.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (images / "subfolder").mkdir()
    Image.fromarray(photo(40, 30)).save(images / "subfolder" / "ignored.jpg")
    hostile_names = (
        "..evil name ..jpg",
        "a b.jpg",
        "back\\..\\slash.jpg",
        "-rf.jpg",
        ".hidden.jpg",
        "x" * 240 + ".jpg",
        "new\nline.jpg",
        CJK_NAME,
    )
    for hostile in hostile_names:
        Image.fromarray(photo(40, 30)).save(images / hostile, format="JPEG")
    Image.fromarray(photo(40, 30)).save(images / "a.jpg")
    Image.fromarray(photo(40, 30)).save(images / "a.png")
    trimaps = root / "annotations" / "trimaps"
    trimaps.mkdir(parents=True)
    Image.fromarray(pet_trimap(120, 80)).save(trimaps / "normal.png")
    Image.fromarray(pet_trimap(120, 80)).save(trimaps / "rotated.png")  # stored orientation, like the image
    return root


@pytest.fixture(scope="module")
def inferred(checkpoint: Path, messy: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("messy-out") / "predictions"
    result = infer_folder(checkpoint, messy / "images", out, threshold=0.5, device="cpu", progress=False)
    return result, out


def test_right_outputs_written_and_right_inputs_skipped(inferred) -> None:
    result, out = inferred
    written = sorted(path.name for path in out.iterdir())
    stems = ["normal", "rotated", "gray16", "rgb16", "cmyk", "rgba", "palette", "_evil_name_", "a_b",
             "back___slash", "rf", "hidden", "x" * 100, "new_line", "貓" * 66, "a_jpg", "a_png"]  # fmt: skip
    assert written == sorted(f"{stem}_{kind}.png" for stem in stems for kind in ("mask", "panel"))
    assert all(SAFE_OUTPUT.fullmatch(name) for name in written)
    assert [p.name for p in out.parent.iterdir()] == ["predictions"]  # nothing escaped the output folder
    assert len(result.written) == len(stems)
    skipped = {item.path.name: item.kind for item in result.skipped}
    assert skipped == {
        "empty.jpg": "empty file",
        "truncated.jpg": "truncated or corrupt",
        "notes.jpg": "not an image",
        "._normal.jpg": "macOS metadata file",
    }
    assert "wrote 17 masks and panels" in result.summary() and "skipped 4" in result.summary()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_masks_are_binary_at_the_displayed_size(inferred) -> None:
    _, out = inferred
    expected = {"normal": (120, 80), "rotated": (80, 120), "gray16": (60, 40), "rgb16": (64, 48), "cmyk": (70, 50),
                "rgba": (50, 50), "palette": (50, 40), "a_jpg": (40, 30)}  # fmt: skip
    for stem, size in expected.items():
        with Image.open(out / f"{stem}_mask.png") as mask:
            assert (mask.mode, mask.size) == ("L", size), stem
            assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
        with Image.open(out / f"{stem}_panel.png") as panel:
            panel.load()
            with_truth = stem in ("normal", "rotated")  # ground truth only where a trimap exists
            assert panel.size == panel_size(*size, with_truth), stem


def test_mask_is_the_bilinear_probability_map_thresholded(checkpoint: Path, inferred, messy: Path) -> None:
    """Recompute normal.jpg's mask: model at the checkpoint size, probabilities resized bilinear, then thresholded."""
    _, out = inferred
    model, state = load_model(checkpoint)
    size = state.image_size
    with Image.open(messy / "images" / "normal.jpg") as image:
        small = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    with torch.no_grad():
        probability = torch.sigmoid(model(torch.from_numpy(small).permute(2, 0, 1)[None]))
    full = F.interpolate(probability, size=(80, 120), mode="bilinear", align_corners=False)[0, 0].numpy()
    with Image.open(out / "normal_mask.png") as mask:
        written = np.asarray(mask) == 255
    assert (written == (full > 0.5)).mean() > 0.999


def test_pixel_formats_are_converted_properly(messy: Path) -> None:
    images = messy / "images"
    gray = read_photo(images / "gray16.png", upright=True).rgb
    np.testing.assert_array_equal(np.asarray(gray)[..., 0], photo(60, 40)[..., 0])  # 16-bit scaled back to 8-bit
    rgb16 = read_photo(images / "rgb16.png", upright=True).rgb
    assert np.abs(np.asarray(rgb16).astype(int) - photo(64, 48)).max() <= 1
    cmyk = read_photo(images / "cmyk.jpg", upright=True).rgb
    assert cmyk.mode == "RGB" and cmyk.size == (70, 50)
    rgba = read_photo(images / "rgba.png", upright=True).rgb
    assert rgba.mode == "RGB" and rgba.getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_turns_image_and_ground_truth_alike(messy: Path) -> None:
    rotated = read_photo(messy / "images" / "rotated.jpg", upright=True)
    image = rotated.rgb
    assert rotated.stored_size == (120, 80) and image.size == (80, 120)
    trimap = read_trimap(messy / "annotations" / "trimaps" / "rotated.png", rotated.stored_size, rotated.transpose)
    assert trimap.shape == (120, 80)
    red = np.asarray(image, dtype=np.float32)[..., 0]
    assert red[trimap == 1].mean() > red[trimap == 2].mean() + 100  # the pet is where the trimap says


def test_names_stay_inside_and_never_collide() -> None:
    assert safe_stem("../../etc/passwd.jpg") == "passwd"
    assert safe_stem("..\\..\\x.jpg") == "____x"
    assert safe_stem("..jpg") == "image" and safe_stem(".jpg") == "jpg"
    assert "/" not in safe_stem("a/b.jpg") and ".." not in safe_stem("a...b.jpg")
    paths = [Path(name) for name in ("a.jpg", "a.png", "A.jpg", "a_jpg.gif", "b c.jpg", "b_c.jpg", "d.jpg")]
    names = output_names(paths)
    assert len({name.casefold() for name in names.values()}) == len(paths)
    assert names[Path("d.jpg")] == "d"
    assert names[Path("a.png")] == "a_png"


# Pillow checks the panels' label text against the same limit
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_skipped(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(photo(100, 100)).save(images / "small.png")  # 10000 pixels
    Image.fromarray(photo(160, 150)).save(images / "over_limit.png")  # 24000: above the limit (a warning in Pillow)
    Image.fromarray(photo(300, 300)).save(images / "far_over.png")  # 90000: above twice the limit (an error)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)
    result = infer_folder(checkpoint, images, tmp_path / "out", device="cpu", progress=False)
    assert [path.name for path in result.written] == ["small_mask.png"]
    skipped = {item.path.name: item.kind for item in result.skipped}
    assert skipped == {"far_over.png": "too large", "over_limit.png": "too large"}


def test_raw_test_list_is_the_default_input(checkpoint: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "annotations" / "trimaps").mkdir(parents=True)
    (raw / "annotations" / "test.txt").write_text("cat_1 1 1 1\ndog_2 2 2 1\ngone_3 3 2 2\n")
    Image.fromarray(photo(96, 64)).save(raw / "images" / "cat_1.jpg")
    Image.fromarray(photo(64, 96)).save(raw / "images" / "dog_2.jpg")
    Image.fromarray(photo(96, 64)).save(raw / "images" / "unlisted.jpg")
    Image.fromarray(pet_trimap(96, 64)).save(raw / "annotations" / "trimaps" / "cat_1.png")
    result = infer_folder(checkpoint, None, tmp_path / "out", raw_dir=raw, device="cpu", progress=False)
    assert sorted(p.name for p in result.written) == ["cat_1_mask.png", "dog_2_mask.png"]
    assert [(item.path.name, item.kind) for item in result.skipped] == [("gone_3.jpg", "missing")]
    with Image.open(tmp_path / "out" / "cat_1_panel.png") as panel:
        assert panel.size == panel_size(96, 64, with_truth=True)


def test_nothing_readable_is_an_error(checkpoint: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no files"):
        infer_folder(checkpoint, empty, tmp_path / "out1", device="cpu", progress=False)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("text")
    (junk / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"no readable image among 2 file\(s\)"):
        infer_folder(checkpoint, junk, tmp_path / "out2", device="cpu", progress=False)
    assert not (tmp_path / "out2").exists()
    with pytest.raises(DataError, match="input folder not found"):
        infer_folder(checkpoint, tmp_path / "nowhere", tmp_path / "out3", device="cpu", progress=False)


def test_model_names_resolve_to_best_checkpoints(checkpoint: Path, tmp_path: Path) -> None:
    models_dir = checkpoint.parents[1]
    assert resolve_checkpoint("unet", models_dir) == checkpoint
    assert resolve_checkpoint(str(checkpoint)) == checkpoint
    with pytest.raises(CheckpointError, match="resnet34_unet/best.pt: checkpoint not found; the train_resnet stage"):
        resolve_checkpoint("resnet34_unet", models_dir)
    with pytest.raises(CheckpointError, match="nothing.pt: checkpoint not found"):
        resolve_checkpoint(tmp_path / "nothing.pt")


def test_stage_script_on_any_folder(checkpoint: Path, messy: Path, tmp_path: Path) -> None:
    params = default_params()
    params["infer"]["threshold"] = 0.3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = [sys.executable, str(REPO / "stages" / "infer.py"), "--params", str(tmp_path / "params.yaml"),
               "--model", str(checkpoint), "--no-progress", "--device", "cpu"]  # fmt: skip
    done = subprocess.run(
        [*command, "--input", str(messy / "images"), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "skipped " in done.stderr and "wrote 17 masks and panels" in done.stderr
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 17
    (tmp_path / "nothing").mkdir()
    failed = subprocess.run(
        [*command, "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "out2")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("error: ")


def test_flip_tta_is_the_predict_path_of_evaluation(checkpoint: Path, messy: Path, tmp_path: Path) -> None:
    """--tta averages the flipped prediction in, as evaluation does: some mask pixels change, none outside {0, 255}."""
    command = [sys.executable, str(REPO / "stages" / "infer.py"), "--params", str(REPO / "params.yaml"), "--model",
               str(checkpoint), "--input", str(messy / "images"), "--no-progress", "--device", "cpu"]  # fmt: skip
    for flag, out in (("--no-tta", "plain"), ("--tta", "tta")):
        done = subprocess.run(
            [*command, flag, "--output", str(tmp_path / out)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    changed = 0
    for plain in sorted((tmp_path / "plain").glob("*_mask.png")):
        with Image.open(plain) as a, Image.open(tmp_path / "tta" / plain.name) as b:
            changed += int((np.asarray(a) != np.asarray(b)).sum())
            assert set(np.unique(np.asarray(b)).tolist()) <= {0, 255}
    assert changed > 0


def test_a_rebuilt_output_folder_holds_only_this_run_and_survives_a_failed_one(
    checkpoint: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(photo(64, 48)).save(images / "cat.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old_mask.png").write_bytes(b"from an earlier run")
    infer_folder(checkpoint, images, out, device="cpu", progress=False, rebuild=True)
    assert sorted(p.name for p in out.iterdir()) == ["cat_mask.png", "cat_panel.png"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (images / "cat.jpg").write_text("no longer an image")
    with pytest.raises(DataError, match="no readable image"):
        infer_folder(checkpoint, images, out, device="cpu", progress=False, rebuild=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "out"]  # no temporary folder left


def test_a_model_name_must_find_that_model_in_its_checkpoint(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    swapped = Path("models/resnet34_unet/best.pt")
    swapped.parent.mkdir(parents=True)
    shutil.copyfile(checkpoint, swapped)  # a unet checkpoint where the resnet34_unet one belongs
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(photo(64, 48)).save(images / "cat.jpg")
    with pytest.raises(CheckpointError) as info:
        infer_folder("resnet34_unet", images, device="cpu", progress=False, rebuild=True)
    assert str(info.value) == (
        "models/resnet34_unet/best.pt: holds a unet model, expected resnet34_unet; restore the pipeline's copy with "
        "dvc checkout --force models/resnet34_unet/best.pt, or delete it and retrain with dvc repro train_resnet"
    )
    assert not Path("predictions").exists()
    infer_folder(swapped, images, tmp_path / "out", device="cpu", progress=False)  # a file is taken as it is


def test_largest_region_postprocessing_of_the_full_size_masks(checkpoint: Path, inferred, messy: Path, tmp_path: Path):
    """infer --postprocess largest: each written mask is the largest filled region of the plain mask."""
    from tests.test_postprocess import reference_largest_filled

    _, plain = inferred
    out = tmp_path / "largest"
    infer_folder(checkpoint, messy / "images", out, postprocess="largest", device="cpu", progress=False)
    changed = 0
    for path in sorted(plain.glob("*_mask.png")):
        with Image.open(path) as before, Image.open(out / path.name) as after:
            expected = reference_largest_filled(np.asarray(before) == 255)
            written = np.asarray(after) == 255
        np.testing.assert_array_equal(written, expected, err_msg=path.name)
        changed += int((written != (np.asarray(Image.open(path)) == 255)).any())
    assert changed  # the tiny model leaves strays or holes somewhere
