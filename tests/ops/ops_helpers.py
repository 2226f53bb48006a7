"""Helpers shared by the op tests (imported by name: pytest puts tests/ops on sys.path)."""
from __future__ import annotations

import os

import torch

from bev_ddp.ops import _extension


def kernel_expected() -> bool:
    """True unless this install was built without extensions or kernels are disabled."""
    return os.environ.get("BEV_DDP_NO_EXT") != "1" and not _extension.kernels_disabled()


def make_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_with_1_and_2_threads(fn):
    """``(fn() with 1 torch thread, fn() with 2)``; the thread count is restored afterwards."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fn()
        torch.set_num_threads(2)
        two = fn()
    finally:
        torch.set_num_threads(threads)
    return one, two
