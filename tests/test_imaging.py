"""One reader of photos: preprocessing (training) and inference see the same pixels for the same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petseg.data.cache import load_split
from petseg.data.imaging import as_model_input, read_photo
from petseg.data.preprocess import preprocess
from petseg.inference.run import read_input

SIZE = 32


def _smooth(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    picture = (
        rng.uniform(40, 200, 3) + xx[..., None] * rng.uniform(-0.4, 0.4, 3) + yy[..., None] * rng.uniform(-0.4, 0.4, 3)
    )
    return np.clip(picture + rng.normal(0, 3, picture.shape), 0, 255).astype(np.uint8)


def _transparent_rgba(width: int, height: int) -> Image.Image:
    """A photo whose left half is fully transparent over garbage colours, and partly transparent elsewhere."""
    rgb = _smooth(width, height, 1)
    rgb[:, : width // 2] = np.random.default_rng(2).integers(0, 256, (height, width // 2, 3))  # hidden colours
    alpha = np.full((height, width), 180, np.uint8)
    alpha[:, : width // 2] = 0
    return Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")


def _palette_with_transparency(width: int, height: int) -> Image.Image:
    image = Image.fromarray(_smooth(width, height, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 0  # palette entry 0 is transparent
    return image


PHOTOS = {  # name -> (image, file format); every file is named .jpg as in the dataset
    "rgba_transparent": (lambda: _transparent_rgba(90, 70), "PNG"),
    "la_transparent": (lambda: _transparent_rgba(90, 70).convert("LA"), "PNG"),
    "palette_transparent": (lambda: _palette_with_transparency(80, 60), "PNG"),
    "large_jpeg": (lambda: Image.fromarray(_smooth(300, 200, 4)), "JPEG"),  # draft decoding engages at 32 px
    "cmyk_jpeg": (lambda: Image.fromarray(_smooth(120, 90, 5)).convert("CMYK"), "JPEG"),
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imaging") / "raw"
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for name, (make, fmt) in PHOTOS.items():
        image = make()
        save_kwargs = {"transparency": 0} if name == "palette_transparent" else {}
        image.save(root / "images" / f"{name}.jpg", format=fmt, **save_kwargs)
        trimap = np.full((image.size[1], image.size[0]), 2, np.uint8)
        trimap[10:30, 20:50] = 1
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
    Image.fromarray(_smooth(40, 40, 9)).save(root / "images" / "extra.jpg")
    Image.fromarray(np.full((40, 40), 2, np.uint8)).save(root / "annotations" / "trimaps" / "extra.png")
    (root / "annotations" / "trainval.txt").write_text("".join(f"{name} 1 1 1\n" for name in PHOTOS))
    (root / "annotations" / "test.txt").write_text("extra 1 1 1\n")
    return root


@pytest.mark.parametrize("jpeg_draft", [False, True])
def test_preprocess_and_inference_give_identical_pixels(raw: Path, tmp_path: Path, jpeg_draft: bool) -> None:
    names = list(PHOTOS)  # all in trainval: train and val (every 2nd) are cached as training sees them
    preprocess(raw, tmp_path / "cache", image_size=SIZE, val_every=2, jpeg_draft=jpeg_draft, workers=1, progress=False)
    cached = {}
    for split in ("train", "val"):
        data = load_split(tmp_path / "cache", split)
        cached.update({name: np.asarray(data.images[i]) for i, name in enumerate(data.names)})
    assert sorted(cached) == sorted(names)
    for name in names:
        _, pixels = read_input(raw / "images" / f"{name}.jpg", SIZE, jpeg_draft)
        np.testing.assert_array_equal(pixels, cached[name], err_msg=name)


def test_transparency_is_composited_on_white(raw: Path) -> None:
    photo = read_photo(raw / "images" / "rgba_transparent.jpg")
    pixels = np.asarray(photo.rgb)
    assert (pixels[:, :40] == 255).all()  # the fully transparent half: white, whatever colours were hidden there
    stored = np.asarray(_transparent_rgba(90, 70))[:, 60:, :3].astype(np.float64)
    np.testing.assert_allclose(pixels[:, 60:], stored * 180 / 255 + 255 * 75 / 255, atol=1.0)  # 180/255 opaque
    assert any("composited on white" in note for note in photo.notes)
    palette = np.asarray(read_photo(raw / "images" / "palette_transparent.jpg").rgb)
    index = np.asarray(Image.open(raw / "images" / "palette_transparent.jpg"))
    assert (palette[index == 0] == 255).all() and (index == 0).any()


def test_draft_decoding_changes_large_jpegs_only_slightly(raw: Path) -> None:
    _, full = read_input(raw / "images" / "large_jpeg.jpg", SIZE, jpeg_draft=False)
    _, draft = read_input(raw / "images" / "large_jpeg.jpg", SIZE, jpeg_draft=True)
    difference = np.abs(full.astype(int) - draft.astype(int))
    assert 0 < difference.max() <= 12 and difference.mean() < 2  # a different decode, the same picture


def test_model_input_is_float_nchw_in_unit_range() -> None:
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    images = as_model_input(pixels)
    assert images.shape == (2, 3, 8, 8) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images[1, 2, 3, 4], torch.tensor(float(pixels[1, 3, 4, 2]) / 255.0))
