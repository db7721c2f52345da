"""Training-epoch throughput of one loop variant, each in a fresh process (so heap and thread state never leak).

    python benchmarks/bench_loops.py ours                # petseg's defaults
    python benchmarks/bench_loops.py reference           # the reference reports' loop as they wrote it
    python benchmarks/bench_loops.py --list              # every variant and what differs

Prints one JSON line: images/s of each measured epoch, and the seconds of the
warm-up epoch before them (which include torch.compile's compilation).
The variants differ from ``ours`` in exactly the ways their names say:

- ``ours``: batches cut from the uint8 cache and augmented on the device,
  channels_last, fused AdamW, the precision and compilation that ``auto``
  resolves to here, glibc heap tuned;
- ``reference-data``: the reference reports' data path (a per-sample PIL
  Dataset decoding, resizing, flipping and jittering every JPEG, in a DataLoader
  with 2 workers), everything else as ``ours``;
- ``reference``: the reports' loop as written: their data path, an NCHW model,
  fp32, ``torch.optim.AdamW`` with its defaults, no heap tuning;
- ``ours-untuned-heap``, ``ours-fp32``, ``ours-bf16``, ``ours-compiled``,
  ``ours-uncompiled``: one setting of ``ours`` switched.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from petseg.data import layout
from petseg.data.augment import augment_batch
from petseg.data.cache import load_split
from petseg.device import configure_device, resolve_compile, synchronize
from petseg.losses import get_loss
from petseg.models import build_model
from petseg.params import AugmentParams
from petseg.precision import resolve_precision
from petseg.training.batches import SplitTensors, epoch_batches
from petseg.training.loops import training_step
from petseg.training.optim import make_optimizer

AUGMENT = AugmentParams(hflip=0.5, vflip=0.0, rotate=0.0, scale=0.0, brightness=0.2, contrast=0.2, saturation=0.2)
VARIANTS = {
    "ours": {},
    "reference-data": {"data": "reference"},
    "reference": {"data": "reference", "layout": "nchw", "precision": "fp32", "optimizer": "plain", "heap": False},
    # the reports' loop at the best precision this CPU has (what `auto` picks), so the pair differs in loop only
    "reference-best": {"data": "reference", "layout": "nchw", "precision": "auto", "optimizer": "plain", "heap": False},
    "ours-untuned-heap": {"heap": False},
    "ours-fp32": {"precision": "fp32"},
    "ours-bf16": {"precision": "bf16"},
    "ours-compiled": {"compile": True},
    "ours-uncompiled": {"compile": False},
}


class ReferenceDataset(torch.utils.data.Dataset):
    """Per-sample PIL decode, resize, flip and colour jitter: how the reference reports fed their models."""

    def __init__(self, raw: Path, names: list[str], size: int):
        from torchvision.transforms import ColorJitter

        self.raw, self.names, self.size = raw, names, size
        self.jitter = ColorJitter(
            brightness=AUGMENT.brightness, contrast=AUGMENT.contrast, saturation=AUGMENT.saturation
        )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms import functional as F

        name = self.names[index]
        image = (
            Image.open(layout.image_path(self.raw, name)).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        )
        trimap = Image.open(layout.trimap_path(self.raw, name)).resize((self.size, self.size), Image.NEAREST)
        image_tensor = F.to_tensor(image)
        mask = torch.from_numpy(np.asarray(trimap) != 2).float().unsqueeze(0)
        if torch.rand(()) < AUGMENT.hflip:
            image_tensor, mask = image_tensor.flip(-1), mask.flip(-1)
        return self.jitter(image_tensor), mask


def measure(
    variant: str, raw: Path, cache: Path, *, batch_size: int, base_channels: int, epochs: int, images: int
) -> tuple[list[float], float]:
    """Images/s of ``epochs`` measured epochs of one variant, and the seconds of the warm-up epoch before them."""
    setting = {
        "data": "ours",
        "layout": "channels_last",
        "precision": "auto",
        "optimizer": "fused",
        "heap": True,
        "compile": "auto",
        **VARIANTS[variant],
    }
    device = torch.device("cpu") if not torch.cuda.is_available() else torch.device("cuda")
    if setting["heap"] or device.type != "cpu":  # on the CPU, configure_device is the heap tuning
        configure_device(device)
    precision = resolve_precision(setting["precision"], device)
    compiled, _ = resolve_compile(setting["compile"], device, precision.name)
    loss_fn = get_loss("bce+dice")
    torch.manual_seed(0)
    model = build_model("unet", base_channels=base_channels)
    channels_last = setting["layout"] == "channels_last"
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if setting["optimizer"] == "fused":
        optimizer = make_optimizer("adamw", model, 1e-3, 1e-4, device)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    step_model = torch.compile(model) if compiled else model
    split = load_split(cache, "train")
    n = (min(images, len(split)) // batch_size) * batch_size  # the first n images of the split, on both data paths
    if setting["data"] == "ours":
        data = SplitTensors(split, device, channels_last)
    else:
        loader = torch.utils.data.DataLoader(
            ReferenceDataset(raw, split.names[:n], split.image_size),
            batch_size=batch_size,
            shuffle=True,
            num_workers=2,
            drop_last=True,
            persistent_workers=True,
        )
    rates, warmup = [], 0.0
    for epoch in range(epochs + 1):  # epoch 0 warms up (and compiles)
        model.train()
        synchronize(device)
        started = time.perf_counter()
        if setting["data"] == "ours":
            generator = torch.Generator(device=device).manual_seed(epoch)
            for indices in epoch_batches(n, batch_size, seed=0, epoch=epoch):
                images, masks = augment_batch(*data.batch(indices), AUGMENT, generator)
                training_step(step_model, optimizer, loss_fn, images, masks, precision)
        else:
            for images, masks in loader:
                images, masks = images.to(device), masks.to(device)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                training_step(step_model, optimizer, loss_fn, images, masks, precision)
        synchronize(device)
        if epoch:
            rates.append(n / (time.perf_counter() - started))
        else:
            warmup = time.perf_counter() - started
    return rates, warmup


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", nargs="?", choices=sorted(VARIANTS))
    parser.add_argument("--raw", type=Path, help="raw layout the reference loader decodes")
    parser.add_argument("--cache", type=Path, help="the same images as a tensor cache (train split)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=256, help="images per epoch (the first of the split)")
    parser.add_argument("--list", action="store_true")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.list or args.variant is None:
        for name, changes in VARIANTS.items():
            print(f"{name}: {changes or 'petseg defaults'}")
        return
    rates, warmup = measure(
        args.variant,
        args.raw,
        args.cache,
        batch_size=args.batch,
        base_channels=args.base_channels,
        epochs=args.epochs,
        images=args.images,
    )
    print(
        json.dumps(
            {
                "variant": args.variant,
                "images_per_s": rates,
                "median": statistics.median(rates),
                "warmup_seconds": warmup,
            }
        )
    )


if __name__ == "__main__":
    main()
