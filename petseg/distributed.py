"""Distributed data parallel set-up for training under ``torchrun``.

When torchrun starts the train stage (``WORLD_SIZE`` > 1 in the environment),
each process trains on its share of every global batch and DDP all-reduces
the gradients; metrics are summed across ranks, and only rank 0 writes
checkpoints and logs. With one process everything here is a no-op.

:func:`launch_local` is how the train stage starts itself on N processes of
this machine (``train.nproc_per_node`` > 1): torchrun's own launcher, run in
this process, so that signals reach the workers and a failed rank becomes one
clear error.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from petseg.errors import ParamsError, PetsegError
from petseg.system import usable_cpus

log = logging.getLogger(__name__)


class DistributedError(PetsegError):
    """A training process failed or was stopped; the stage exits with its code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def global_batch(self, batch_size: int, param: str) -> int:
        """``batch_size``, checked to split evenly over the processes (WORLD_SIZE, however torchrun was started)."""
        if batch_size % self.world_size:
            raise ParamsError(
                f"{param} = {batch_size} is invalid; it is the global batch and must be divisible by the "
                f"{self.world_size} processes torchrun started (WORLD_SIZE)"
            )
        return batch_size

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all ranks (in place, and returned)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, value: object) -> object:
        """Rank 0's value, on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), the ones its checkpoint holds.

        Each rank updates its running statistics from its own share of the last
        batch; without this, ranks would validate slightly different models.
        """
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """True when this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def under_torchrun() -> bool:
    """True inside any torchrun worker, even a job of one process (so the stage never launches twice)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's global rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def relaunch_under_torchrun(
    nproc_per_node: int, script: str | Path, script_args: Sequence[str], *, module: bool = False
) -> bool:
    """Start this stage on ``nproc_per_node`` processes when asked and not already a torchrun worker.

    Returns True when the workers ran here (the caller is done), False when
    this process trains itself: alone, or as a worker torchrun started (then
    only rank 0 reports, and a ``--nproc_per_node`` given to torchrun wins).
    """
    if not under_torchrun():
        if nproc_per_node <= 1:
            return False
        log.info("train: starting %d processes (train.nproc_per_node) with torchrun", nproc_per_node)
        launch_local(nproc_per_node, script, script_args, module=module)
        return True
    if env_rank() != 0:
        logging.getLogger("petseg").setLevel(logging.WARNING)  # rank 0 reports for all
    elif int(os.environ.get("LOCAL_WORLD_SIZE", nproc_per_node)) != nproc_per_node:
        log.info(
            "train: torchrun started %s processes per node; train.nproc_per_node = %d is not used",
            os.environ["LOCAL_WORLD_SIZE"],
            nproc_per_node,
        )
    return False


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); no-op for one process."""
    if not launched_by_torchrun():
        return DistContext()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type not in ("cuda", "cpu"):
        raise ParamsError(
            f"distributed training runs on CUDA or CPU, not {device_type}; set train.device to cuda or cpu"
        )
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            local_size = os.environ.get("LOCAL_WORLD_SIZE", "?")
            raise ParamsError(
                f"{local_size} processes per node but only {visible} CUDA device(s) visible to this one "
                "(CUDA_VISIBLE_DEVICES); lower train.nproc_per_node or torchrun's --nproc_per_node"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def launch_local(nproc_per_node: int, script: str | Path, script_args: Sequence[str], *, module: bool = False) -> None:
    """Run ``script`` on ``nproc_per_node`` processes of this machine, as ``torchrun --standalone`` would.

    The launcher runs in this process: a SIGINT or SIGTERM sent to it stops every
    worker (finished epochs are saved), and a worker that fails ends the others
    and raises a :class:`DistributedError` naming its rank and exit code (its own
    message is above, on stderr). Each worker gets an equal share of the CPU
    threads unless ``OMP_NUM_THREADS`` is set. ``--standalone`` rendezvous picks
    a free port, so several jobs can run side by side.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cpus() // nproc_per_node)))
    args = get_args_parser().parse_args(
        [
            "--standalone",
            f"--nproc_per_node={nproc_per_node}",
            *(["--module"] if module else []),
            str(script),
            *script_args,
        ]
    )
    try:
        run(args)
    except ChildFailedError as exc:
        first, failure = exc.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode
        raise DistributedError(
            f"training failed: rank {first} of {nproc_per_node} {_how(failure.exitcode)} and the other processes "
            f"were stopped; the cause is rank {first}'s message above (errors of other ranks about a lost "
            "connection follow from it)",
            exit_code=code or 1,
        ) from None
    except SignalException as exc:
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise DistributedError(
            f"training stopped by {exc.sigval.name}: finished epochs are saved; run the stage again to continue",
            exit_code=128 + int(exc.sigval),
        ) from None


def _how(exitcode: int) -> str:
    """A worker's exit code in words."""
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        return f"was killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"died (exit code {exitcode})"
