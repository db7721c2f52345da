"""Batches straight from the tensor cache: a seeded shuffle per epoch, gathered on the training device.

There is no per-sample decoding and no data loader between the cache and the
model: a batch is an index into the memory-mapped arrays (or into the split
uploaded once to the GPU), converted to the models' input by
petseg.data.imaging.as_model_input.
"""

from __future__ import annotations

import numpy as np
import torch

from petseg.data.cache import Split
from petseg.data.imaging import as_model_input
from petseg.distributed import DistContext


class SplitTensors:
    """A cache split served as batches of float images (N x 3 x H x W in [0, 1]) and masks (N x 1 x H x W).

    On CUDA the whole split is uploaded once as uint8 when it fits in a third of
    the free memory; otherwise (and on CPU) each batch is gathered from the
    memory-mapped arrays and copied over (pinned, non-blocking on CUDA). Either
    way a batch holds the images in the order asked for, so the same seed gives
    the same batches (and the same augmentation draws) whatever the memory.
    """

    def __init__(self, split: Split, device: torch.device, channels_last: bool = True):
        self.split = split
        self.device = device
        self.channels_last = channels_last
        self.images: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        if device.type == "cuda":
            needed = split.images.nbytes + split.masks.nbytes
            free, _ = torch.cuda.mem_get_info(device.index if device.index is not None else torch.cuda.current_device())
            if needed < free / 3:
                self.images = torch.from_numpy(np.ascontiguousarray(split.images)).to(device)
                self.masks = torch.from_numpy(np.ascontiguousarray(split.masks)).to(device)

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.images is not None and self.masks is not None:
            index = torch.from_numpy(indices).to(self.device, non_blocking=True)
            images, masks = self.images[index], self.masks[index]
        else:
            images, masks = (
                torch.from_numpy(array) for array in read_in_order(indices, self.split.images, self.split.masks)
            )
            if self.device.type == "cuda":
                images = images.pin_memory().to(self.device, non_blocking=True)
                masks = masks.pin_memory().to(self.device, non_blocking=True)
            elif self.device.type != "cpu":
                images, masks = images.to(self.device), masks.to(self.device)
        images = as_model_input(images)
        if not self.channels_last:
            images = images.contiguous()
        return images, masks.unsqueeze(1).float()


def read_in_order(indices: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """``array[indices]`` for each array, read from (memory-mapped) disk in sorted, sequential order."""
    ascending = np.argsort(indices, kind="stable")
    back = np.empty_like(ascending)
    back[ascending] = np.arange(len(ascending))  # position of each requested index among the sorted ones
    return [array[indices[ascending]][back] for array in arrays]


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, context: DistContext = DistContext()
) -> list[np.ndarray]:
    """This rank's share of each global batch of one epoch: a seeded shuffle, incomplete last batch dropped.

    With fewer images than one batch, the whole (shuffled) split is one batch.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if n >= batch_size:
        order = order[: (n // batch_size) * batch_size]
        global_batches = order.reshape(-1, batch_size)
    else:
        global_batches = order.reshape(1, -1)
    if not context.enabled:
        return list(global_batches)
    return [batch[context.rank :: context.world_size] for batch in global_batches]


def augment_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The augmentation generator's seed for one epoch on one rank."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)
