"""Change-count uncertainty map of DDP (paper Sec. 4.1, Fig. 3c).

For every pixel count how often the discretised prediction changes from one sampling step to
the next, then normalise to [0, 1] by the number of step transitions (``steps - 1``):
0 = the prediction never changed, 1 = it changed at every step.  With one step there is no
transition and the map is all zeros.  For multi-channel predictions (multi-label BEV masks,
[B, K, H, W]) a pixel changes when any channel flips.
"""
from __future__ import annotations

from typing import Sequence

import torch

from bev_ddp.errors import InputError


def change_count_uncertainty(step_predictions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Normalised per-pixel change count.

    Args:
        step_predictions: discretised predictions of consecutive sampling steps, each
            [B, H, W] (class index) or [B, C, H, W] (masks / bins), all of one shape.
    Returns:
        float32 [B, H, W] in [0, 1]: (number of changes) / (steps - 1); zeros for one step.
    """
    if len(step_predictions) == 0:
        raise InputError("change_count_uncertainty needs at least one step prediction")
    first = step_predictions[0]
    if first.dim() not in (3, 4):
        raise InputError(f"step predictions must be [B, H, W] or [B, C, H, W], got {tuple(first.shape)}")
    for i, pred in enumerate(step_predictions):
        if pred.shape != first.shape:
            raise InputError(f"step prediction {i} has shape {tuple(pred.shape)}, step 0 has {tuple(first.shape)}")
    b, h, w = first.shape[0], first.shape[-2], first.shape[-1]
    counts = torch.zeros((b, h, w), dtype=torch.float32, device=first.device)
    for prev, cur in zip(step_predictions[:-1], step_predictions[1:]):
        changed = prev != cur
        if changed.dim() == 4:
            changed = changed.any(dim=1)  # [B, C, H, W] -> [B, H, W]
        counts += changed
    return counts / max(len(step_predictions) - 1, 1)
