"""Which listed names go to train, val and test (``data.split``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def split_names(
    trainval: Sequence[str],
    test: Sequence[str],
    *,
    split: str = "official",
    val_every: int = 10,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Assign listed names to train/val/test.

    ``official``: every ``val_every``-th trainval name, counting from the first
    (indices 0, val_every, 2*val_every, ...), is validation, the other trainval
    names are train, and test.txt is test. ``random``: all listed names
    (trainval then test) are shuffled with ``seed`` and cut by ``fractions``
    (train, val, test), rounding the train and val counts. The params schema
    has checked both options.
    """
    if split == "official":
        return {
            "train": [name for i, name in enumerate(trainval) if i % val_every],
            "val": list(trainval[::val_every]),
            "test": list(test),
        }
    names = list(trainval) + list(test)
    order = np.random.default_rng(seed).permutation(len(names))
    n_train = round(fractions[0] * len(names))
    n_val = round(fractions[1] * len(names))
    shuffled = [names[i] for i in order]
    return {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }
