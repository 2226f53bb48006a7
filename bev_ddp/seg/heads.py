"""Segmentation objective and the auxiliary FCN head.

The DDP decoder predicts the clean label map as class logits; it is trained with pixel-wise
cross-entropy (ignore label 255).  Like the paper's segmentation setting, an auxiliary FCN head
on the condition features adds a cross-entropy term weighted 0.4 that speeds up the encoder's
training; it is not used at inference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.nn.layers import conv_gn


@dataclass(frozen=True)
class CrossEntropyObjective:
    """``(logits [B, K, H, W], target long [B, H, W]) -> mean CE over labelled pixels``.

    A batch without any labelled pixel gives a zero loss that still depends on the logits (so
    every parameter receives a (zero) gradient under DistributedDataParallel).
    """

    ignore_index: int = 255

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[-2:] != logits.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target.long(), ignore_index=self.ignore_index)


class FCNHead(nn.Module):
    """``num_convs`` × (3×3 conv + GroupNorm + ReLU) → dropout → 1×1 conv to class logits.

    Input [B, in_channels, h, w] → logits [B, num_classes, h, w].
    """

    def __init__(self, *, in_channels: int, channels: int, num_classes: int, num_convs: int = 1,
                 num_groups: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [conv_gn(in_channels if i == 0 else channels, channels, 3, num_groups), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels if num_convs else in_channels, num_classes, kernel_size=1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.convs(feats)))
