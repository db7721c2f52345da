"""The per-epoch training log: one DVCLive folder per model, written from the checkpoint's history.

``dvclive/<model>/plots/metrics/<metric>.tsv`` has columns ``step`` (the epoch
number, from 1) and the metric; ``dvclive/<model>/metrics.json`` holds the last
epoch's values and the best validation Dice so far. Rewriting the whole log
from the history that the checkpoint carries keeps the logs and the weights in
step, even when a run was killed between the two writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petseg.data.layout import building_dir
from petseg.errors import DataError
from petseg.io import read_table

log = logging.getLogger(__name__)

# the keys of an epoch record (besides "epoch"), logged by training and charted by the plot stage
EPOCH_METRICS = ("train/loss", "train/dice", "val/loss", "val/dice", "lr")


def epoch_record(
    epoch: int, train_loss: float, train_dice: float, val_loss: float, val_dice: float, lr: float
) -> dict[str, float]:
    """One epoch's entry of the history (and of the log): epoch numbered from 1."""
    return dict(zip(("epoch", *EPOCH_METRICS), (epoch, train_loss, train_dice, val_loss, val_dice, lr)))


def metric_path(live_dir: str | Path, metric: str) -> Path:
    """``<live_dir>/plots/metrics/<metric>.tsv`` as DVCLive writes it (metric like ``val/dice``)."""
    return Path(live_dir) / "plots" / "metrics" / f"{metric}.tsv"


def _open_live(directory: Path):
    """A DVCLive logger writing to ``directory`` (no report, no dvc.yaml edits, no experiment of its own)."""
    import dvclive.live
    from scmrepo.exceptions import SCMError

    def make() -> dvclive.Live:
        return dvclive.Live(str(directory), resume=False, report=None, save_dvc_exp=False, dvcyaml=False)

    try:
        return make()
    except SCMError:
        # DVCLive reads HEAD when it finds a git repository, which fails before the
        # first commit ("Empty git repo"); log without its git/DVC integration then.
        log.warning("the git repository has no commit yet: DVCLive logs without git integration")
        find_repo = dvclive.live.get_dvc_repo
        dvclive.live.get_dvc_repo = lambda: None
        try:
            return make()
        finally:
            dvclive.live.get_dvc_repo = find_repo


class EpochLog:
    """Per-epoch metrics through DVCLive, the whole log rebuilt from the checkpoint history at every write.

    Each write builds the log in a temporary folder beside ``directory`` and
    swaps it into place, so the folder always holds one whole log (never a half
    or a mixed one, never a file a previous run left), and a run that stops
    before its first epoch is done leaves the previous log exactly as it was.
    """

    def __init__(self, directory: Path | None, history: list[dict[str, float]]):
        self.directory = directory
        self.history = history
        self.written = False

    def _rebuild(self, history: list[dict[str, float]]) -> None:
        with building_dir(self.directory) as temp:
            live = _open_live(temp)
            for record in history:
                self._write(live, record, history)
            live.end()
        self.written = True

    @staticmethod
    def _write(live, record: dict[str, float], history: list[dict[str, float]]) -> None:
        live.step = int(record["epoch"])  # the logs' step column is the epoch number, from 1
        for key in EPOCH_METRICS:
            live.log_metric(key, record[key])
        best = max(history[: history.index(record) + 1], key=lambda r: r["val/dice"])
        live.log_metric("best/val_dice", best["val/dice"], plot=False)
        live.log_metric("best/epoch", best["epoch"], plot=False)
        live.next_step()

    def append(self, record: dict[str, float], history: list[dict[str, float]]) -> None:
        """Log one more epoch (``record`` is the last of ``history``)."""
        self.history = history
        if self.directory is not None:
            self._rebuild(history)

    def close(self) -> None:
        """A run that had nothing left to do still leaves the log of its checkpoint's history."""
        if self.directory is not None and not self.written and self.history:
            self._rebuild(self.history)


@dataclass(frozen=True)
class Series:
    """One logged metric of one model: epochs (from 1) and values."""

    epochs: np.ndarray
    values: np.ndarray


def read_metric(path: str | Path, stage: str) -> Series:
    """Read one DVCLive TSV (``step``, value column); errors name the file and the stage that writes it."""
    path = Path(path)
    column = path.stem
    rows = read_table(path, "\t", stage, "the metric log")
    try:
        steps = np.array([int(row["step"]) for row in rows], dtype=np.int64)
        values = np.array([float(row[column]) for row in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: not a DVCLive metric log with columns step and {column} ({exc!r}); re-run {stage}"
        ) from None
    if len(rows) == 0:
        raise DataError(f"{path}: no epochs logged; re-run {stage}")
    if np.any(np.diff(steps) <= 0):
        raise DataError(f"{path}: epochs not in increasing order (logs of two runs mixed?); re-run {stage}")
    return Series(steps, values)
