"""An exponential moving average of the weights (``train.ema``), validated and saved in place of the trained ones.

torch.optim.swa_utils.AveragedModel keeps the average, of the parameters and of
the batch-norm statistics alike (``use_buffers``). After optimizer step t the
average moves towards the trained weights by 1 - d_t, where the decay warms up
as d_t = min(train.ema, (1 + t) / (10 + t)) (the warm-up of TensorFlow's and
timm's model EMA): a short run is not dominated by the random initial weights.
Integer buffers (batch norm's step count) are copied, not averaged.

Off by default. It serves long runs (thousands of optimizer steps), where an average
smooths the noisy end of training; the recipe study (benchmarks/RESULTS.md) found no
gain in its 270-step runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from petseg.errors import CheckpointError


def warmed_up_decay(decay: float, steps: int) -> float:
    """The decay applied at the update after ``steps`` earlier ones."""
    return min(decay, (1 + steps) / (10 + steps))


class WeightAverage:
    """The moving average of ``model``'s weights (the plain module, not its DDP or compiled wrapper)."""

    def __init__(self, model: nn.Module, decay: float):
        self.source = model

        @torch.no_grad()
        def update(averaged: list[torch.Tensor], current: list[torch.Tensor], _: torch.Tensor) -> None:
            # the count from the average's own host-side buffer: reading the device copy passed here would
            # make a GPU wait for the host at every step
            weight = 1 - warmed_up_decay(decay, self.steps)
            if torch.is_floating_point(averaged[0]):
                torch._foreach_lerp_(averaged, current, weight)
            else:
                for mean, value in zip(averaged, current, strict=True):
                    mean.copy_(value)

        self.averaged = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        """The averaged model (the one validated and saved)."""
        return self.averaged.module

    @property
    def steps(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self) -> None:
        """One step of the average, after an optimizer step."""
        self.averaged.update_parameters(self.source)

    def state(self) -> dict[str, Any]:
        """What continuing the run needs besides the averaged weights: the trained weights and the step count."""
        return {"trained": self.source.state_dict(), "steps": self.steps}

    def restore(self, averaged_weights: dict[str, torch.Tensor], state: Any, path: Any) -> None:
        """Load a checkpoint's averaged weights here and its trained weights into the trained model."""
        if not isinstance(state, dict) or not isinstance(state.get("trained"), dict) or "steps" not in state:
            raise CheckpointError(f"{path}: holds no weight average to continue with train.ema")
        self.source.load_state_dict(state["trained"])
        self.module.load_state_dict(averaged_weights)
        self.averaged.n_averaged.fill_(int(state["steps"]))
