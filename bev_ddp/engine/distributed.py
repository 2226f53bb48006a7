"""Process-group helpers for ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node N -m bev_ddp.cli train CONFIG`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; :func:`init_from_env` joins the group (gloo on CPU,
nccl on CUDA).  Everything else here also works in a plain single process, where the world has
one rank and collectives are no-ops.  The collectives themselves live in :mod:`bev_ddp.comm`
(re-exported here for the trainer).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bev_ddp.comm import all_reduce_sum, barrier, get_rank, get_world_size, is_initialized, shutdown

__all__ = ["DistInfo", "all_reduce_sum", "barrier", "get_rank", "get_world_size", "init_from_env", "is_initialized",
           "pick_device", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_from_env() -> DistInfo:
    """Join the process group described by torchrun's environment, if any.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised.  Returns the
    rank, world size and the device this process should use.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(local_rank)
    if world_size > 1 and not is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=get_rank(), world_size=get_world_size(), local_rank=local_rank, device=device)

