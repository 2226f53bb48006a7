"""Feature pyramid network and multi-stage merging of the image encoder (DDP §3.2).

"The image encoder ... generates multi-scale features at 4 different resolutions.  Subsequently,
these multi-scale features are fused using the FPN and aggregated by a 1×1 convolution.  The
produced feature map, with the resolution of 256 × h/4 × w/4, is employed as the condition for the
map decoder."

* :class:`FPN` — Lin et al. 2017: 1×1 lateral convs, top-down pathway (upsample + add), 3×3 output
  convs; GroupNorm after every conv, no activation.
* :class:`MultiStageMerge` — resizes every level to the finest one, concatenates them and fuses
  with a 1×1 conv + GroupNorm.

Both build themselves from the channel list the backbone declares.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn.layers import conv_gn


class FPN(nn.Module):
    """Top-down feature pyramid.

    Args:
        in_channels: channels of the input levels, finest first (e.g. Swin-T ``[96, 192, 384, 768]``).
        out_channels: channels of every output level (256 in DDP).
        num_groups: GroupNorm groups (32 in DDP).
    Input: list of ``L`` tensors ``[B, C_l, H_l, W_l]`` (finest first).
    Output: list of ``L`` tensors ``[B, out_channels, H_l, W_l]``.
    """

    def __init__(self, *, in_channels: Sequence[int], out_channels: int = 256, num_groups: int = 32) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.lateral = nn.ModuleList(conv_gn(c, out_channels, 1, num_groups) for c in self.in_channels)
        self.output = nn.ModuleList(conv_gn(out_channels, out_channels, 3, num_groups) for _ in self.in_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise InputError(f"FPN expects {len(self.in_channels)} levels, got {len(feats)}")
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for level in range(len(laterals) - 1, 0, -1):  # coarse -> fine
            up = F.interpolate(laterals[level], size=laterals[level - 1].shape[-2:], mode="nearest")
            laterals[level - 1] = laterals[level - 1] + up
        return [conv(x) for conv, x in zip(self.output, laterals)]


class MultiStageMerge(nn.Module):
    """Resize all levels to the first (finest) one, concatenate, fuse with 1×1 conv + GroupNorm.

    Input: list of ``L`` tensors ``[B, C_l, H_l, W_l]``; output ``[B, out_channels, H_0, W_0]``.
    """

    def __init__(self, *, in_channels: Sequence[int], out_channels: int = 256, num_groups: int = 32) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.fuse = conv_gn(sum(self.in_channels), out_channels, 1, num_groups)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        resized = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return self.fuse(torch.cat(resized, dim=1))  # [B, sum C_l, H_0, W_0] -> [B, out, H_0, W_0]
