"""Checkpoints: one type that the trainer writes and every reader reads; atomic writes, safe reads.

A :class:`Checkpoint` holds the weights (``model``, a state_dict) with what
rebuilds the architecture through the registry (``model_name``,
``model_params``) and the image size it was trained at, so a checkpoint is all
inference needs. Training checkpoints also hold the optimizer, scheduler,
epoch, best score, per-epoch history, RNG states and the run's signature
(its model section and train params, image size and data: what a run must
share with it to continue it).

On disk it is a plain dict of tensors and primitive values (``format`` names
the version), written atomically. Reading checks, before anything is built
from the file: that it is a whole zip archive (CRC of every member, so a
truncated or bit-flipped file is named as such), that it unpickles with
``weights_only=True`` (pickled code is refused, never run), that it holds the
keys and types of a petseg checkpoint, and that its tensors have exactly the
shapes of the architecture it names (compared on the meta device, so bogus
model options cannot allocate anything).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from petseg.errors import CheckpointError, PetsegError
from petseg.io import atomic_path, write_error
from petseg.models import MODELS, SegmentationModel, architecture, build_model

FORMAT = "petseg-checkpoint/1"
UNREADABLE = "not a readable checkpoint (corrupt or truncated?)"
ZIP_MAGIC = b"PK\x03\x04"
# how torch's weights_only unpickler names a refused object: "Unsupported global: GLOBAL posix.system ..."
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


@dataclass
class Checkpoint:
    """A trained model, and for training checkpoints the whole state needed to continue the run."""

    model_name: str
    model_params: dict[str, Any]  # architecture options for build_model
    model: dict[str, torch.Tensor]  # the state_dict
    image_size: int  # square side of the images it was trained on
    epoch: int  # epochs completed
    val_dice: float | None = None  # validation Dice after ``epoch``
    # training state: absent (None) in a weights-only checkpoint
    epochs: int | None = None  # epochs planned
    best_dice: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)  # one record per epoch (petseg.training.log)
    epoch_seconds: list[float] = field(default_factory=list)  # wall time of each epoch (training + validation)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None  # the fp16 gradient scaler's state
    rng: dict[str, Any] | None = None
    # train.ema > 0: ``model`` holds the averaged weights; this, the trained ones and the update count
    ema: dict[str, Any] | None = None
    signature: dict[str, Any] | None = None  # what a run must share with it to continue it: its whole params
    petseg_version: str | None = None  # set by keyword in petseg.training.run: the writer, for whoever inspects it

    @property
    def params(self) -> dict[str, Any] | None:
        """The model's section and the train params it was made with (from the signature, stored once)."""
        if self.signature is None:
            return None
        return {"model": self.signature["model"], "train": {**self.signature["train"], "epochs": self.epochs}}

    def to_file_dict(self) -> dict[str, Any]:
        """The dict written to disk (tensors kept as they are, not copied)."""
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_file_dict(cls, path: Path, data: Any) -> Checkpoint:
        """Check what a file held and build the checkpoint; anything else is a CheckpointError naming ``path``."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: not a petseg checkpoint (holds a {type(data).__name__}, not a dict)")
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [key for key in ("format", *required) if key not in data]
        if missing:
            raise CheckpointError(f"{path}: not a petseg checkpoint (missing {', '.join(missing)})")
        if data["format"] != FORMAT:
            raise CheckpointError(f"{path}: unsupported checkpoint format {data['format']!r} (expected {FORMAT})")
        problems = []
        if not isinstance(data["model_name"], str):
            problems.append(f"model_name = {data['model_name']!r} is not a string")
        params = data["model_params"]
        if not isinstance(params, dict) or not all(isinstance(key, str) for key in params):
            problems.append("model_params is not a mapping of option names")
        weights = data["model"]
        if not isinstance(weights, dict) or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in weights.items()
        ):
            problems.append("model is not a state_dict (names -> tensors)")
        for key, low in (("epoch", 0), ("image_size", 1)):
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{key} = {value!r} (expected an integer >= {low})")
        if problems:
            raise CheckpointError(f"{path}: not a valid petseg checkpoint: {'; '.join(problems)}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def save_checkpoint(path: str | Path, checkpoint: Checkpoint, *, also: Sequence[str | Path] = ()) -> None:
    """Write a checkpoint atomically: a full disk or a kill leaves the previous file intact.

    ``also`` names more paths that receive the same checkpoint (a hard link to
    the one file written, or a copy), each renamed into place before ``path``.
    """
    with atomic_path(path) as temp:
        try:
            torch.save(checkpoint.to_file_dict(), temp)
        except RuntimeError as exc:  # torch reports a failed write (disk full, file size limit) this way
            raise write_error(path, exc) from None
        for other in also:
            with atomic_path(other) as other_temp:
                other_temp.unlink()
                try:
                    os.link(temp, other_temp)
                except OSError:
                    shutil.copyfile(temp, other_temp)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _check_archive(path: Path) -> None:
    """A torch zip checkpoint must be a whole zip file whose members all match their CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: {UNREADABLE}: {_first_line(exc)}") from None
    if damaged is not None:
        member = damaged.split("/", 1)[-1]  # torch stores members under a folder named after the file
        raise CheckpointError(f"{path}: corrupt checkpoint: its {member} does not match its checksum (damaged file)")


def repair_hint(path: str | Path) -> str:
    """How to get a good ``models/<model>/{best,last}.pt`` back (``"; ..."``), or ``""`` for any other file."""
    path = Path(path)
    info = MODELS.get(path.parent.name)
    if info is None or path.name not in ("best.pt", "last.pt"):
        return ""
    return (
        f"; restore the pipeline's copy with dvc checkout --force {path}, "
        f"or delete it and retrain with dvc repro {info.train_stage}"
    )


def check_model_name(checkpoint: Checkpoint, path: str | Path, expected: str) -> None:
    """The checkpoint must hold the model it is used as (a file copied over another model's is refused)."""
    if checkpoint.model_name != expected:
        raise CheckpointError(f"{path}: holds a {checkpoint.model_name} model, expected {expected}{repair_hint(path)}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint safely; a missing, corrupt, truncated or unsafe file is a CheckpointError naming it.

    For a checkpoint of the pipeline the message ends with the commands that bring a good one back.
    """
    path = Path(path)
    try:
        return _read_checkpoint(path, map_location)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{repair_hint(path)}") from None


def _read_checkpoint(path: Path, map_location: str | torch.device) -> Checkpoint:
    if not path.is_file():
        raise CheckpointError(f"{path}: {'checkpoint not found' if not path.exists() else 'not a file'}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            start = handle.read(len(ZIP_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise CheckpointError(f"{path}: empty checkpoint file (0 bytes)")
    if zipfile.is_zipfile(path):
        _check_archive(path)
    elif start == ZIP_MAGIC:  # a zip without its closing directory: the end of the file is missing
        raise CheckpointError(f"{path}: {UNREADABLE}: the file ends early ({size} bytes; its zip directory is missing)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on an unusual pickle protocol: the error says enough
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _GLOBAL.search(str(exc))
        if refused is None:
            raise CheckpointError(
                f"{path}: not a readable checkpoint (corrupt, truncated, or not a PyTorch tensors-only file)"
            ) from None
        raise CheckpointError(
            f"{path}: refused to load: it holds pickled objects other than tensors and plain values "
            f"({refused.group(1)}); weights_only=True never runs them"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail anywhere inside torch's reader
        raise CheckpointError(f"{path}: {UNREADABLE}: torch.load failed ({type(exc).__name__})") from None
    return Checkpoint.from_file_dict(path, data)


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(str(n) for n in tensor.shape) or "scalar"


def _fit_problems(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
    """How a state_dict differs from the model's: missing and unexpected names, shape mismatches (a few each)."""
    problems = []
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    mismatched = [
        f"{key} {_shape(found[key])} (model {_shape(expected[key])})"
        for key in expected
        if key in found and tuple(found[key].shape) != tuple(expected[key].shape)
    ]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched)):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            problems.append(f"{len(items)} tensor(s) {label} ({shown})")
    return problems


def model_from_checkpoint(checkpoint: Checkpoint, source: str | Path = "checkpoint") -> SegmentationModel:
    """Rebuild the model a checkpoint was trained as, with its weights loaded.

    Pretrained-encoder options are dropped when rebuilding: the checkpoint's own
    weights replace them, so nothing is fetched from the network. The weights'
    names and shapes are checked against the architecture on the meta device
    first, so a checkpoint that does not fit allocates nothing.
    """
    name = checkpoint.model_name
    params = architecture(checkpoint.model_params)
    if "encoder_weights" in params:
        params["encoder_weights"] = None
    try:
        with torch.device("meta"):
            skeleton = build_model(name, **params)
    except (PetsegError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: cannot rebuild its {name} model: {_first_line(exc)}") from None
    problems = _fit_problems(skeleton.state_dict(), checkpoint.model)
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the {name} model {params}: {'; '.join(problems)}")
    model = build_model(name, **params)
    try:
        model.load_state_dict(checkpoint.model)
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{source}: weights do not fit the {name} model: {_first_line(exc)}") from None
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[SegmentationModel, Checkpoint]:
    """Load a checkpoint file and return (model in eval mode on ``device``, checkpoint)."""
    checkpoint = load_checkpoint(path)
    try:
        model = model_from_checkpoint(checkpoint, path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{repair_hint(path)}") from None
    return model.to(device).eval(), checkpoint
