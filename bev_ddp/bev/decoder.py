"""BEV decoders: SECOND + SECONDFPN (Yan et al., 2018) and GeneralizedResNet + LSSFPN, as in BEVFusion.

SECOND: per stage a stride-``s`` 3×3 conv followed by ``n`` 3×3 convs (conv-BN-ReLU, BN eps 1e-3,
momentum 0.01).  SECONDFPN: each stage is brought back to the input resolution (1×1 conv for
stride 1, transposed conv otherwise) and the results are concatenated.  Full config:
[B, 256, 128, 128] → stages 128@128², 256@64² → [B, 512, 128, 128].

Camera-only BEVFusion (``camera-bev256d2``) decodes with GeneralizedResNet (BasicBlock stages
``[[2, 160, 2], [2, 320, 2], [2, 640, 1]]``, BN eps 1e-5) + LSSFPN: [B, 80, 128, 128] → 160@64²,
320@32², 640@32² → fuse 640@32² (resized to 64²) with 160@64² → 256@64² → ×2 → [B, 256, 128, 128].
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
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


class GeneralizedResNet(nn.ModuleList):
    """BEVFusion's camera-only BEV decoder backbone: stages of torchvision ``BasicBlock``s.

    Args:
        in_channels: channels of the BEV map.
        blocks: one ``(num_blocks, channels, stride)`` per stage; the first block of a stage
            carries the stride and a 1×1 conv-BN shortcut when stride or width change.
    """

    def __init__(self, *, in_channels: int, blocks: Sequence[Sequence[int]]):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        channels, strides = [], []
        for num, out, stride in blocks:
            shortcut = None
            if stride != 1 or out != in_channels:
                shortcut = nn.Sequential(nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            stage = [BasicBlock(in_channels, out, stride=stride, downsample=shortcut)]
            stage += [BasicBlock(out, out) for _ in range(num - 1)]
            self.append(nn.Sequential(*stage))
            in_channels = out
            channels.append(out)
            strides.append(stride * (strides[-1] if strides else 1))
        self.out_channels, self.strides = tuple(channels), tuple(strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, C, X, Y] → one map per stage [B, C_i, X / s_i, Y / s_i] (s_i: cumulative stride)."""
        outs = []
        for stage in self:
            x = stage(x)
            outs.append(x)
        return outs


class LSSFPN(nn.Module):
    """BEVFusion's camera-only BEV neck: two stages fused, then upsampled.

    The stage ``in_indices[0]`` is resized (bilinear, corners aligned) to stage ``in_indices[1]``'s
    size, the two are concatenated in that order, mixed by 1×1 and 3×3 conv-BN-ReLU, then upsampled ×``scale_factor`` (bilinear, corners aligned) + 3×3 conv-BN-ReLU.

    Args:
        in_indices: the two stages, e.g. ``(-1, 0)``.  in_channels: their channels.
        out_channels: output channels (256).  scale_factor: final upsampling (2).
    """

    def __init__(self, *, in_indices: Sequence[int], in_channels: Sequence[int], out_channels: int, scale_factor: int = 1):
        super().__init__()
        if len(in_indices) != 2 or len(in_channels) != 2:
            raise ValueError("LSSFPN fuses exactly two stages (in_indices, in_channels of length 2)")
        self.in_indices = tuple(int(i) for i in in_indices)
        self.out_channels = out_channels
        self.scale_factor = scale_factor
        self.fuse = nn.Sequential(
            nn.Conv2d(sum(in_channels), out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.upsample = None
        if scale_factor > 1:
            self.upsample = nn.Sequential(
                nn.Upsample(scale_factor=scale_factor, mode="bilinear", align_corners=True),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stage maps → [B, out_channels, X, Y] at ``scale_factor`` × the second stage's size."""
        coarse, fine = feats[self.in_indices[0]], feats[self.in_indices[1]]
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=True)
        x = self.fuse(torch.cat([coarse, fine], dim=1))  # [B, out, X_fine, Y_fine]
        return self.upsample(x) if self.upsample is not None else x
