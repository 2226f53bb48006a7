"""Per-iteration learning-rate factors: linear warm-up, then cosine, poly or constant.

The factor multiplies the base LR of every parameter group (``torch.optim.lr_scheduler.LambdaLR``),
so the scheduler's state is just its step counter and resumes exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bev_ddp.errors import ConfigError

SCHEDULES = ("cosine", "poly", "constant")


@dataclass(frozen=True)
class LRFactor:
    """``factor(it)`` for iteration ``it`` (0-based) of ``total_iters``.

    Warm-up rises linearly from ``1/warmup_iters`` to 1 over the first ``warmup_iters``
    iterations; after it, ``cosine`` decays from 1 to ``min_lr_ratio``, ``poly`` decays as
    ``(1 - progress)^power`` floored at ``min_lr_ratio`` and ``constant`` stays at 1.
    """

    schedule: str
    total_iters: int
    warmup_iters: int = 0
    min_lr_ratio: float = 1e-3
    poly_power: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.total_iters < 1:
            raise ConfigError(f"train.iters must be >= 1, got {self.total_iters}")
        if not 0 <= self.warmup_iters:
            raise ConfigError(f"optim.warmup_iters must be >= 0, got {self.warmup_iters}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            return (it + 1) / self.warmup_iters
        if self.schedule == "constant":
            return 1.0
        span = max(self.total_iters - self.warmup_iters, 1)
        progress = min((it - self.warmup_iters) / span, 1.0)
        if self.schedule == "cosine":
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return max((1.0 - progress) ** self.poly_power, self.min_lr_ratio)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, factor: LRFactor) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
