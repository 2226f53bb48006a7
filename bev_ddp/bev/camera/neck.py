"""GeneralizedLSSFPN: BEVFusion's top-down camera neck.

Starting from the coarsest level, each level is upsampled (bilinear) to the next finer one,
concatenated with it, mixed by a 1×1 conv and smoothed by a 3×3 conv (both conv-BN-ReLU).  With
input levels ``l = start .. L-1`` it returns ``L - 1 - start`` maps of ``out_channels``, finest first
(Swin-T at 256×704: 192@32×88, 384@16×44, 768@8×22 → 256@32×88, 256@16×44).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn.backbone import FeatureSpec
from bev_ddp.nn.layers import conv_bn_relu


class GeneralizedLSSFPN(nn.Module):
    """Top-down FPN over backbone levels, built from their :class:`FeatureSpec`.

    Args:
        in_specs: one spec per backbone level, finest first.
        out_channels: channels of every output level.
        start_level: first backbone level used.
    """

    def __init__(self, *, in_specs: Sequence[FeatureSpec], out_channels: int, start_level: int = 0):
        super().__init__()
        in_specs = list(in_specs)[start_level:]
        if len(in_specs) < 2:
            raise InputError(f"GeneralizedLSSFPN needs at least two input levels, got {len(in_specs)}")
        self.start_level = start_level
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        num_outs = len(in_specs) - 1
        for i in range(num_outs):
            # level i is concatenated with the (already fused) level i+1; the coarsest one is raw
            coarser = in_specs[i + 1].channels if i == num_outs - 1 else out_channels
            self.lateral_convs.append(conv_bn_relu(in_specs[i].channels + coarser, out_channels, 1))
            self.fpn_convs.append(conv_bn_relu(out_channels, out_channels, 3))
        self.out_specs: tuple[FeatureSpec, ...] = tuple(
            FeatureSpec(channels=out_channels, stride=spec.stride) for spec in in_specs[:num_outs]
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """feats: backbone maps [N, C_l, H_l, W_l], finest first → ``len(out_specs)`` maps [N, out, H_l, W_l]."""
        laterals = list(feats[self.start_level :])
        for i in range(len(self.lateral_convs) - 1, -1, -1):
            coarse = F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="bilinear", align_corners=False)
            fused = torch.cat([laterals[i], coarse], dim=1)  # [N, C_i + C_{i+1}, H_i, W_i]
            laterals[i] = self.fpn_convs[i](self.lateral_convs[i](fused))
        return laterals[: len(self.lateral_convs)]
