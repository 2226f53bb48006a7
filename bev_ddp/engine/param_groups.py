"""AdamW parameter groups: weight decay off for parameters whose names contain given substrings.

The DDP authors' recipes (mmcv's ``paramwise_cfg.custom_keys`` with ``decay_mult=0``) exempt
normalisation weights (``norm`` in the name) and, for depth, Swin's position tables
(``relative_position_bias_table``, ``absolute_pos_embed``) from weight decay.  The match is a plain
substring test on the full parameter name, as there.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn


def decay_param_groups(model: nn.Module, *, weight_decay: float, no_decay_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` in at most two AdamW groups.

    Returns ``[{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]``,
    leaving out an empty group; with no keys, one group holding every trainable parameter.
    """
    keys = [str(k) for k in no_decay_keys]
    decayed, exempt = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (exempt if any(k in name for k in keys) else decayed).append(param)
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
