"""Batched augmentation: flips move image and mask together; jitter touches the image only."""

from __future__ import annotations

import torch

from petseg.data.augment import augment_batch
from tests.paramsfile import augmentation


def batch(n: int = 16, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    images = torch.rand(n, 3, size, size)
    masks = (torch.rand(n, 1, size, size) > 0.5).float()
    return images, masks


def test_flips_move_image_and_mask_together():
    images, masks = batch()
    out_images, out_masks = augment_batch(
        images, masks, augmentation(hflip=0.5, vflip=0.5), torch.Generator().manual_seed(1)
    )
    flipped_any = False
    for i in range(len(images)):
        candidates = {
            (False, False): (images[i], masks[i]),
            (True, False): (images[i].flip(-1), masks[i].flip(-1)),
            (False, True): (images[i].flip(-2), masks[i].flip(-2)),
            (True, True): (images[i].flip(-1).flip(-2), masks[i].flip(-1).flip(-2)),
        }
        matches = [
            k for k, (im, m) in candidates.items() if torch.equal(out_images[i], im) and torch.equal(out_masks[i], m)
        ]
        assert len(matches) == 1, i
        flipped_any |= matches[0] != (False, False)
    assert flipped_any


def test_probability_zero_changes_nothing_and_one_always_flips():
    images, masks = batch()
    same = augment_batch(images, masks, augmentation(hflip=0.0), torch.Generator().manual_seed(1))
    assert torch.equal(same[0], images) and torch.equal(same[1], masks)
    flipped = augment_batch(images, masks, augmentation(hflip=1.0), torch.Generator().manual_seed(1))
    assert torch.equal(flipped[0], images.flip(-1)) and torch.equal(flipped[1], masks.flip(-1))


def test_colour_jitter_changes_images_within_range_and_leaves_masks():
    images, masks = batch()
    config = augmentation(hflip=0.0, brightness=0.4, contrast=0.4, saturation=0.4)
    out_images, out_masks = augment_batch(images, masks, config, torch.Generator().manual_seed(2))
    assert torch.equal(out_masks, masks)
    assert not torch.allclose(out_images, images)
    assert out_images.min() >= 0.0 and out_images.max() <= 1.0
    # each image gets its own factors: the per-image mean brightness ratios differ
    ratios = out_images.mean(dim=(1, 2, 3)) / images.mean(dim=(1, 2, 3))
    assert ratios.std() > 0.01


def test_brightness_scales_each_image_by_one_factor_in_range():
    images, masks = batch()
    images = images * 0.5  # no clipping at 1.4x
    out, _ = augment_batch(images, masks, augmentation(hflip=0.0, brightness=0.4), torch.Generator().manual_seed(3))
    factors = out / images
    per_image = factors.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)
    assert per_image.min() >= 0.6 - 1e-6 and per_image.max() <= 1.4 + 1e-6


def test_same_generator_seed_gives_the_same_batch():
    images, masks = batch()
    config = augmentation(hflip=0.5, vflip=0.5, brightness=0.2, contrast=0.2, saturation=0.2)
    a = augment_batch(images, masks, config, torch.Generator().manual_seed(5))
    b = augment_batch(images, masks, config, torch.Generator().manual_seed(5))
    c = augment_batch(images, masks, config, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_rotation_and_zoom_move_image_and_mask_together():
    """A mask that is a function of the image (its brightness) stays that function through geometric transforms."""
    torch.manual_seed(3)
    size = 32
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - 14) ** 2 + (xx - 18) ** 2) < 64).float()
    images = disc.expand(8, 3, size, size).clone()  # white disc on black: the mask is where the image is white
    masks = disc.expand(8, 1, size, size).clone()
    config = augmentation(hflip=0.0, rotate=30.0, scale=0.25)
    out_images, out_masks = augment_batch(images, masks, config, torch.Generator().manual_seed(5))
    assert not torch.equal(out_masks, masks)  # it moved
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}  # nearest: masks stay binary
    crisp = (out_images[:, :1] < 0.05) | (out_images[:, :1] > 0.95)  # away from the bilinear edge
    assert torch.equal((out_images[:, :1] > 0.5)[crisp], out_masks.bool()[crisp])
    areas = out_masks.sum(dim=(1, 2, 3)) / masks.sum(dim=(1, 2, 3))
    assert areas.min() < 0.95 and areas.max() > 1.05 and areas.max() < 1.25**2 * 1.15  # zoomed both ways, within range


def test_new_transforms_leave_the_draws_of_the_old_ones_alone():
    images, masks = batch()
    old = augmentation(hflip=0.5, brightness=0.3)
    reference = augment_batch(images, masks, old, torch.Generator().manual_seed(2))
    again = augment_batch(
        images, masks, augmentation(hflip=0.5, brightness=0.3, rotate=0.0, scale=0.0), torch.Generator().manual_seed(2)
    )
    assert torch.equal(reference[0], again[0]) and torch.equal(reference[1], again[1])
    same_seed = [
        augment_batch(images, masks, augmentation(rotate=10.0, scale=0.1), torch.Generator().manual_seed(9))
        for _ in range(2)
    ]
    assert torch.equal(same_seed[0][0], same_seed[1][0]) and torch.equal(same_seed[0][1], same_seed[1][1])
