"""Depth objectives and the output activation (paper §3.3 "sigloss"; DepthFormer's depth head).

Output activation: ``depth = ReLU(logits) * unit + min_depth`` (metres), so a prediction is never
below ``min_depth`` and the network regresses the offset above it directly, in units of ``unit``
metres (1 m by default; a larger unit lets a briefly trained network reach far depths).

Scale-invariant log loss (Eigen et al. 2014) on valid pixels (ground truth > 0)::

    g = ln(d + eps) - ln(g_t + eps)
    L = sqrt(var(g) + lambda * mean(g)**2),   lambda = 0.15 (var: unbiased sample variance)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bev_ddp.errors import InputError


def depth_from_logits(logits: torch.Tensor, min_depth: float, unit: float = 1.0) -> torch.Tensor:
    """Decoder output [B, 1, H, W] -> depth in metres, ``ReLU(logits) * unit + min_depth``."""
    return F.relu(logits) * unit + min_depth


@dataclass(frozen=True)
class SigLoss:
    """``(logits [B, 1, H, W], depth [B, 1, H, W] metres, 0 = invalid) -> scalar``.

    Pixels with ground truth outside ``(0, max_depth]`` are ignored.  A batch without a valid
    pixel gives a zero loss that still depends on the logits.
    """

    min_depth: float
    max_depth: float
    unit: float = 1.0
    variance_focus: float = 0.15
    eps: float = 1e-3

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise InputError(f"SigLoss: prediction {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        pred = depth_from_logits(logits.float(), self.min_depth, self.unit)
        valid = (target > 0) & (target <= self.max_depth)
        if int(valid.sum()) < 2:
            return logits.sum() * 0.0
        g = torch.log(pred[valid] + self.eps) - torch.log(target[valid].float() + self.eps)
        return torch.sqrt(g.var() + self.variance_focus * g.mean() ** 2)
