"""Per-process helpers of the training loop: seeding (signals: :mod:`bev_ddp.engine.interrupt`)."""
from __future__ import annotations

import random

import numpy as np
import torch



def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def derived_seed(*parts: int) -> int:
    """A 32-bit seed mixed from several integers (e.g. base seed, rank, stream id)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint32)[0])
