"""Per-iteration learning-rate factors: linear warm-up, then cosine, poly or constant.

The factor multiplies the base LR of every parameter group (``torch.optim.lr_scheduler.LambdaLR``),
so the scheduler's state is just its step counter and resumes exactly.

Two ways to combine warm-up and decay (``optim.warmup_style``):

- ``ours``: warm-up rises linearly from ``1/warmup_iters`` to 1; the decay spans only the
  iterations after it.
- ``mmcv``: mmcv 1.x ``LrUpdaterHook`` with ``warmup='linear'``, ``by_epoch=False``: the decay spans
  the whole run from iteration 0 and, during warm-up, is multiplied by
  ``1 - (1 - it/warmup_iters)(1 - warmup_ratio)``; poly ends at ``min_lr_ratio`` instead of being
  floored there.

Names against mmcv's (``mmcv/runner/hooks/lr_updater.py``, v1.3.1 to v1.7.2):

| ours             | mmcv                                              | meaning                                |
|------------------|---------------------------------------------------|----------------------------------------|
| ``it``           | ``runner.iter``                                   | 0-based index of the optimiser step    |
| ``total_iters``  | ``runner.max_iters``                              | steps in the run                       |
| ``min_lr_ratio`` | ``min_lr / lr`` (poly), ``min_lr_ratio`` (cosine) | end of the decay, a fraction of the LR |
| ``warmup_ratio`` | ``warmup_ratio``                                  | warm-up factor at ``it = 0``           |
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bev_ddp.errors import ConfigError
from bev_ddp.schema import OptimSchema

SCHEDULES = ("cosine", "poly", "constant")
WARMUP_STYLES = ("ours", "mmcv")


@dataclass(frozen=True)
class LRFactor:
    """``factor(it)`` for iteration ``it`` (0-based) of ``total_iters``.

    ``ours`` style: warm-up rises linearly from ``1/warmup_iters`` to 1 over the first
    ``warmup_iters`` iterations; after it, ``cosine`` decays from 1 to ``min_lr_ratio``, ``poly``
    decays as ``(1 - progress)^power`` floored at ``min_lr_ratio`` and ``constant`` stays at 1.
    ``mmcv`` style: the same curves over ``it / total_iters`` of the whole run (poly as
    ``r + (1 - r)(1 - progress)^power``, ``r = min_lr_ratio``), times the warm-up factor rising
    linearly from ``warmup_ratio`` at ``it = 0`` towards 1 at ``it = warmup_iters``.
    """

    schedule: str
    total_iters: int
    warmup_iters: int = 0
    min_lr_ratio: float = 1e-3
    poly_power: float = 1.0
    warmup_style: str = "ours"
    warmup_ratio: float = 0.1  # mmcv's default; used by the mmcv style only

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_style not in WARMUP_STYLES:
            raise ConfigError(f"optim.warmup_style must be one of {', '.join(WARMUP_STYLES)}, got {self.warmup_style!r}")
        if self.total_iters < 1:
            raise ConfigError(f"train.iters must be >= 1, got {self.total_iters}")
        if not 0 <= self.warmup_iters:
            raise ConfigError(f"optim.warmup_iters must be >= 0, got {self.warmup_iters}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.warmup_ratio <= 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in (0, 1], got {self.warmup_ratio}")

    @classmethod
    def from_config(cls, optim: OptimSchema, iters: int) -> LRFactor:
        """The factor of a config's ``optim`` section over ``train.iters`` iterations."""
        return cls(optim.schedule, iters, optim.warmup_iters, optim.min_lr_ratio, optim.poly_power,
                   warmup_style=optim.warmup_style, warmup_ratio=optim.warmup_ratio)

    def __call__(self, it: int) -> float:
        if self.warmup_style == "mmcv":
            factor = self._decay(min(it / self.total_iters, 1.0))
            if it < self.warmup_iters:
                factor *= 1.0 - (1.0 - it / self.warmup_iters) * (1.0 - self.warmup_ratio)
            return factor
        if it < self.warmup_iters:
            return (it + 1) / self.warmup_iters
        span = max(self.total_iters - self.warmup_iters, 1)
        return self._decay(min((it - self.warmup_iters) / span, 1.0))

    def _decay(self, progress: float) -> float:
        """The regular factor at ``progress`` in [0, 1] of the decay span."""
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "cosine":
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.warmup_style == "mmcv":
            return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * (1.0 - progress) ** self.poly_power
        return max((1.0 - progress) ** self.poly_power, self.min_lr_ratio)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, factor: LRFactor) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
