"""Image encoder of DDP for image segmentation and depth (paper §3.2, Fig. 2).

image [B, 3, H, W] → timm backbone (Swin-T / ConvNeXt-T, 4 levels at strides 4, 8, 16, 32)
→ :class:`~bev_ddp.nn.fpn.FPN` (256 ch, GroupNorm) → :class:`~bev_ddp.nn.fpn.MultiStageMerge`
→ condition [B, 256, H/4, W/4] for the map decoder.  The encoder runs once per image; the map
decoder runs once per sampling step.
"""
from __future__ import annotations

import torch
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn.backbone import TimmBackbone
from bev_ddp.nn.fpn import FPN, MultiStageMerge


class ImageEncoder(nn.Module):
    """Backbone → FPN → multi-stage merge: the DDP condition map.

    Args:
        backbone: module returning NCHW levels and declaring ``feature_specs`` (finest first).
        fpn: neck built from ``[spec.channels for spec in backbone.feature_specs]``.
        merge: fuses the FPN levels at the finest stride.
    Input ``images`` float [B, 3, H, W] (normalised); output float [B, C, H / s0, W / s0] with
    ``C = merge.out_channels`` and ``s0`` the finest backbone stride (4).  Declares ``out_channels``,
    ``stride`` (s0) and ``size_divisor`` (what H and W must be multiples of: the backbone's
    ``size_divisibility`` when it has one, else its coarsest stride, 32 for Swin-T / ConvNeXt-T).
    """

    def __init__(self, *, backbone: TimmBackbone, fpn: FPN, merge: MultiStageMerge) -> None:
        super().__init__()
        self.backbone, self.fpn, self.merge = backbone, fpn, merge
        self.out_channels = merge.out_channels
        self.stride = backbone.feature_specs[0].stride
        # whole-image inference pads to this: the backbone's own divisor if it declares one, else its coarsest stride
        self.size_divisor = int(getattr(backbone, "size_divisibility", 0) or backbone.feature_specs[-1].stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise InputError("images hold NaN or inf values")
        return self.merge(self.fpn(self.backbone(images)))


def build_image_encoder(*, backbone: TimmBackbone, channels: int = 256, num_groups: int = 32) -> ImageEncoder:
    """FPN and merge sized from the backbone's declared levels."""
    in_channels = [spec.channels for spec in backbone.feature_specs]
    fpn = FPN(in_channels=in_channels, out_channels=channels, num_groups=num_groups)
    merge = MultiStageMerge(in_channels=[channels] * len(in_channels), out_channels=channels, num_groups=num_groups)
    return ImageEncoder(backbone=backbone, fpn=fpn, merge=merge)
