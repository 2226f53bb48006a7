"""Cross-process helpers: rank, world size, sums and gathers over every rank.

The bottom of the package: the engine, every evaluator and every metric import these instead of
calling ``torch.distributed`` themselves.  In a plain single process (no process group) the
world has one rank and every collective is a no-op that returns its input.
"""
from __future__ import annotations

import gc
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

    Three things, in this order, so that the group's C++ side is gone while Python still runs:

    1. ``gc.collect()``: a ``DistributedDataParallel`` wrapper sits in reference cycles, so it
       (and the reducer that holds the group and its pending gloo work) would otherwise be freed
       only by the collection inside interpreter finalisation.  A gloo worker thread that then
       drops the last reference to a finished work item must take the GIL to release the
       Python state the item captured; during finalisation that thread is killed instead and
       the process dies in ``std::terminate`` ("terminate called without an active exception",
       SIGABRT), one run in a few dozen.
    2. With ``synchronize``, a barrier: no rank tears down its connections (or exits, taking
       rank 0's TCP store with it) while a peer still uses them.  Skipped after an error, when
       the peers may never reach it.
    3. ``destroy_process_group()``: with nothing else holding the group, its worker threads are
       joined here.
    """
    if not is_initialized():
        return
    gc.collect()
    if synchronize and get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()
