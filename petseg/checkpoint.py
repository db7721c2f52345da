"""Checkpoints: written atomically, read with ``weights_only=True``, checked before use.

A checkpoint is a plain dict of tensors and primitive values. Its key ``model``
holds the state_dict; ``model_name`` and ``model_params`` rebuild the
architecture through the registry, so a checkpoint is all inference needs.
Training checkpoints also hold the optimizer, scheduler, epoch, best score,
per-epoch history, RNG states, the params used and a fingerprint of the data.
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from petseg.errors import CheckpointError
from petseg.io import atomic_path
from petseg.models import SegmentationModel, build_model

FORMAT = "petseg-checkpoint/1"
REQUIRED_KEYS = ("format", "model_name", "model_params", "model", "epoch", "image_size")


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any], *, also: Sequence[str | Path] = ()) -> None:
    """Write a checkpoint atomically: a full disk or a kill leaves the previous file intact.

    ``also`` names more paths that receive the same checkpoint (a hard link to
    the one file written, or a copy), each renamed into place before ``path``.
    """
    checkpoint = {"format": FORMAT, **checkpoint}
    with atomic_path(path) as temp:
        torch.save(checkpoint, temp)
        for other in also:
            with atomic_path(other) as other_temp:
                other_temp.unlink()
                try:
                    os.link(temp, other_temp)
                except OSError:
                    shutil.copyfile(temp, other_temp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; a missing, corrupt, truncated or unsafe file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain values "
            f"(weights_only=True): {first_line}"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {exc}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a petseg checkpoint (holds a {type(checkpoint).__name__}, not a dict)")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: not a petseg checkpoint (missing {', '.join(missing)})")
    if checkpoint["format"] != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {checkpoint['format']!r} (expected {FORMAT})")
    return checkpoint


def model_from_checkpoint(
    checkpoint: dict[str, Any], source: str | Path = "checkpoint"
) -> SegmentationModel:
    """Rebuild the model a checkpoint was trained as, with its weights loaded.

    Pretrained-encoder options are dropped when rebuilding: the checkpoint's own
    weights replace them, so nothing is fetched from the network.
    """
    params = dict(checkpoint["model_params"])
    if "encoder_weights" in params:
        params["encoder_weights"] = None
    try:
        model = build_model(checkpoint["model_name"], **params)
    except ValueError as exc:
        raise CheckpointError(f"{source}: cannot rebuild its model: {exc}") from None
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{source}: weights do not fit the {checkpoint['model_name']} model: {exc}") from None
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[SegmentationModel, dict[str, Any]]:
    """Load a checkpoint file and return (model in eval mode on ``device``, checkpoint)."""
    checkpoint = load_checkpoint(path)
    model = model_from_checkpoint(checkpoint, path).to(device).eval()
    return model, checkpoint
