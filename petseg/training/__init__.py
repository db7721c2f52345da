"""Training, one concern per module.

- batches: the seeded shuffle of each epoch and batches gathered from the cache on the device;
- optim: optimizer and lr schedule from the params;
- loops: ``train_one_epoch`` and ``validate``;
- resume: what a checkpoint must share with a run to be continued, RNG state, the folder lock;
- log: the per-epoch DVCLive log (and reading it back);
- fit: the whole run, top to bottom.
"""

from petseg.training.fit import FitResult, fit

__all__ = ["FitResult", "fit"]
