"""Image encoder of DDP for image segmentation and depth (paper §3.2, Fig. 2).

image [B, 3, H, W] → timm backbone (Swin-T / ConvNeXt-T, 4 levels at strides 4, 8, 16, 32)
→ :class:`~bev_ddp.nn.fpn.FPN` (256 ch, GroupNorm) → :class:`~bev_ddp.nn.fpn.MultiStageMerge`
→ condition [B, 256, H/4, W/4] for the map decoder.  The encoder runs once per image; the map
decoder runs once per sampling step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import timm
import torch
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn.fpn import FPN, MultiStageMerge


@dataclass(frozen=True)
class FeatureSpec:
    """One backbone output level: channels and stride in input pixels."""

    channels: int
    stride: int


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model with its outputs declared and always returned NCHW.

    Args:
        model: a timm ``features_only`` network (``timm.create_model(..., features_only=True)``).
    Output: list of ``[B, C_l, H / s_l, W / s_l]`` tensors matching :attr:`feature_info`.
    """

    def __init__(self, *, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        info = model.feature_info  # type: ignore[attr-defined]
        self.feature_info = [FeatureSpec(c, s) for c, s in zip(info.channels(), info.reduction())]
        self.channels_last = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = self.model(images)
        if self.channels_last:  # Swin returns [B, H, W, C]
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]  # [B, C, H, W]
        return feats


def build_timm_backbone(name: str, *, img_size: Optional[Sequence[int]] = None,
                        out_indices: Sequence[int] = (0, 1, 2, 3),
                        checkpoint: Optional[str] = None, **kwargs: Any) -> TimmBackbone:
    """Build a randomly initialised timm backbone (never downloads weights).

    Args:
        name: timm model name, e.g. ``swin_tiny_patch4_window7_224`` or ``convnext_tiny``.
        img_size: (H, W) training crop; passed to transformer backbones that need it (Swin), which
            are also built with ``dynamic_img_size`` so whole-image inference can use other sizes.
        checkpoint: optional local file of backbone weights (``torch.load(weights_only=True)``),
            e.g. ImageNet weights converted beforehand; keys may carry a ``model.`` prefix.
        kwargs: architecture overrides (``embed_dim``, ``depths``, ``dims`` ...) for tiny variants.
    """
    if "swin" in name:  # window attention needs the input size; dynamic masks accept any other size
        size = {"img_size": tuple(img_size)} if img_size is not None else {}
        kwargs = {**size, "dynamic_img_size": True, **kwargs}
    try:
        model = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:  # unknown model or bad architecture keyword
        raise InputError(f"cannot build backbone {name!r} with {kwargs}: {exc}") from exc
    backbone = TimmBackbone(model=model)
    if checkpoint:
        load_backbone_weights(backbone, checkpoint)
    return backbone


def load_backbone_weights(backbone: TimmBackbone, path: str) -> None:
    """Load a local state dict into the backbone (strict on shapes, lenient on missing heads)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"backbone checkpoint not found: {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise InputError(f"backbone checkpoint {file} cannot be read: {exc}") from exc
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise InputError(f"backbone checkpoint {file} holds no state dict")
    state = {k.removeprefix("backbone.").removeprefix("model."): v for k, v in state.items()}
    try:
        missing, _ = backbone.model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise InputError(f"backbone checkpoint {file} does not match the backbone: {exc}") from exc
    if len(missing) == len(list(backbone.model.state_dict())):
        raise InputError(f"backbone checkpoint {file} shares no parameter name with the backbone")


class ImageEncoder(nn.Module):
    """Backbone → FPN → multi-stage merge: the DDP condition map.

    Args:
        backbone: module returning NCHW levels and declaring ``feature_info`` (finest first).
        fpn: neck built from ``[spec.channels for spec in backbone.feature_info]``.
        merge: fuses the FPN levels at the finest stride.
    Input ``images`` float [B, 3, H, W] (normalised); output float [B, C, H / s0, W / s0] with
    ``C = merge.out_channels`` and ``s0`` the finest backbone stride (4).
    """

    def __init__(self, *, backbone: TimmBackbone, fpn: FPN, merge: MultiStageMerge) -> None:
        super().__init__()
        self.backbone, self.fpn, self.merge = backbone, fpn, merge
        self.out_channels = merge.out_channels
        self.stride = backbone.feature_info[0].stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise InputError("images hold NaN or inf values")
        return self.merge(self.fpn(self.backbone(images)))


def build_image_encoder(*, backbone: TimmBackbone, channels: int = 256, num_groups: int = 32) -> ImageEncoder:
    """FPN and merge sized from the backbone's declared levels."""
    in_channels = [spec.channels for spec in backbone.feature_info]
    fpn = FPN(in_channels=in_channels, out_channels=channels, num_groups=num_groups)
    merge = MultiStageMerge(in_channels=[channels] * len(in_channels), out_channels=channels, num_groups=num_groups)
    return ImageEncoder(backbone=backbone, fpn=fpn, merge=merge)
