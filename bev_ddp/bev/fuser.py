"""ConvFuser: BEVFusion's fusion of camera and LiDAR BEV maps (concat → 3×3 conv → BN → ReLU)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn.layers import conv_bn_relu


class ConvFuser(nn.Module):
    """Concatenate BEV maps on channels and mix them with one conv-BN-ReLU.

    Args:
        in_channels: channels of each input map, in the order they are passed.
        out_channels: fused channels.
    """

    def __init__(self, *, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = out_channels
        self.fuse = conv_bn_relu(sum(self.in_channels), out_channels, 3)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """maps: [B, C_i, X, Y] on one grid → [B, out_channels, X, Y]."""
        if len(maps) != len(self.in_channels):
            raise InputError(f"ConvFuser expects {len(self.in_channels)} maps, got {len(maps)}")
        sizes = {tuple(m.shape[-2:]) for m in maps}
        if len(sizes) != 1:
            raise InputError(f"ConvFuser inputs must share one BEV grid, got sizes {sorted(sizes)}")
        return self.fuse(torch.cat(list(maps), dim=1))  # [B, ΣC_i, X, Y] -> [B, out, X, Y]
