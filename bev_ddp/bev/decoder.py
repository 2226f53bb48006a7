"""BEV decoder: SECOND backbone + SECONDFPN neck (Yan et al., 2018), as in BEVFusion.

SECOND: per stage a stride-``s`` 3×3 conv followed by ``n`` 3×3 convs (conv-BN-ReLU, BN eps 1e-3,
momentum 0.01).  SECONDFPN: each stage is brought back to the input resolution (1×1 conv for
stride 1, transposed conv otherwise) and the results are concatenated.  Full config:
[B, 256, 128, 128] → stages 128@128², 256@64² → [B, 512, 128, 128].
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bev_ddp.errors import InputError


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SECOND(nn.Module):
    """Args: in_channels; out_channels, layer_nums, layer_strides: one entry per stage."""

    def __init__(
        self, *, in_channels: int, out_channels: Sequence[int], layer_nums: Sequence[int], layer_strides: Sequence[int]
    ):
        super().__init__()
        if not len(out_channels) == len(layer_nums) == len(layer_strides):
            raise InputError("SECOND needs out_channels, layer_nums and layer_strides of equal length")
        self.blocks = nn.ModuleList()
        channels = in_channels
        for out, num, stride in zip(out_channels, layer_nums, layer_strides):
            layers: list[nn.Module] = [nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False), _bn(out), nn.ReLU(inplace=True)]
            for _ in range(num):
                layers += [nn.Conv2d(out, out, 3, padding=1, bias=False), _bn(out), nn.ReLU(inplace=True)]
            self.blocks.append(nn.Sequential(*layers))
            channels = out
        self.out_channels = tuple(out_channels)
        self.strides = tuple(int(torch.tensor(layer_strides[: i + 1]).prod()) for i in range(len(layer_strides)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, C, X, Y] → one map per stage [B, C_i, X / s_i, Y / s_i] (s_i: cumulative stride)."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


class SECONDFPN(nn.Module):
    """Args: in_channels, out_channels, upsample_strides: one entry per SECOND stage."""

    def __init__(self, *, in_channels: Sequence[int], out_channels: Sequence[int], upsample_strides: Sequence[int]):
        super().__init__()
        if not len(in_channels) == len(out_channels) == len(upsample_strides):
            raise InputError("SECONDFPN needs in_channels, out_channels and upsample_strides of equal length")
        self.deblocks = nn.ModuleList()
        for cin, cout, stride in zip(in_channels, out_channels, upsample_strides):
            if stride == 1:
                up: nn.Module = nn.Conv2d(cin, cout, 1, bias=False)
            else:
                up = nn.ConvTranspose2d(cin, cout, stride, stride=stride, bias=False)
            self.deblocks.append(nn.Sequential(up, _bn(cout), nn.ReLU(inplace=True)))
        self.out_channels = sum(out_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """SECOND maps → [B, Σ out_channels, X, Y] at the finest stage's resolution."""
        return torch.cat([deblock(f) for deblock, f in zip(self.deblocks, feats)], dim=1)
