"""Cross-process helpers: rank, world size, sums and gathers over every rank.

The bottom of the package: the engine, every evaluator and every metric import these instead of
calling ``torch.distributed`` themselves.  In a plain single process (no process group) the
world has one rank and every collective is a no-op that returns its input.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return get_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place, also returned); a no-op in one process.

    Under nccl a CPU tensor goes through the GPU and comes back, so evaluators may keep their
    counts on the CPU with any backend.
    """
    if is_initialized() and get_world_size() > 1:
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            moved = tensor.cuda()
            dist.all_reduce(moved)
            tensor.copy_(moved.cpu())
        else:
            dist.all_reduce(tensor)
    return tensor


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (any picklable value), in rank order, on every rank; ``[obj]`` in one process."""
    if not (is_initialized() and get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_initialized() and get_world_size() > 1:
        dist.barrier()


def shutdown(*, synchronize: bool = True) -> None:
    """Leave the process group, if one is initialised; a no-op in a single process.

    With ``synchronize`` every rank first waits at a barrier, so no rank tears down its gloo
    connections (or exits, taking the TCP store of rank 0 with it) while a peer still uses
    them: a peer whose connection vanishes mid-collective dies in ``std::terminate``.  Objects
    that hold the group (a ``DistributedDataParallel`` wrapper) should be released before.
    After an exception the barrier is skipped (the peers may never reach it) and the group is
    only destroyed.
    """
    if not is_initialized():
        return
    if synchronize and get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()

