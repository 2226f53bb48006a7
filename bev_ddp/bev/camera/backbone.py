"""Multi-scale image backbones from timm, with a declared output specification.

BEVFusion's camera encoder is a Swin-T (Liu et al., 2021) whose stages 2-4 feed the LSS-FPN
neck.  timm builds it with ``features_only=True``; Swin's feature maps come out channels-last
(NHWC) and are permuted here to NCHW so every consumer sees one layout.

The backbone *declares* what it outputs (:attr:`TimmBackbone.feature_specs`: channels and stride
per level); the neck builds itself from that declaration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import timm
import torch
from torch import nn

from bev_ddp.errors import InputError


@dataclass(frozen=True)
class FeatureSpec:
    """One output level of an encoder: ``channels`` and ``stride`` (input pixels per feature pixel)."""

    channels: int
    stride: int


class TimmBackbone(nn.Module):
    """A timm model run with ``features_only=True``; outputs NCHW maps at the declared levels.

    Args:
        model: a timm feature extractor (``timm.create_model(..., features_only=True)``).
    """

    def __init__(self, *, model: nn.Module):
        super().__init__()
        info = getattr(model, "feature_info", None)
        if info is None:
            raise TypeError("TimmBackbone needs a timm model built with features_only=True")
        self.model = model
        self.channels_last = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")
        self.feature_specs: tuple[FeatureSpec, ...] = tuple(
            FeatureSpec(channels=int(c), stride=int(s)) for c, s in zip(info.channels(), info.reduction())
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [N, 3, H, W] -> one [N, C_l, H / s_l, W / s_l] map per declared level."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"backbone images must have shape [N, 3, H, W], got {tuple(images.shape)}")
        feats = self.model(images)
        if self.channels_last:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]  # NHWC -> [N, C, H, W]
        return list(feats)


def build_timm_backbone(
    *, name: str, out_indices: Sequence[int], image_size: Sequence[int], kwargs: dict[str, Any] | None = None
) -> TimmBackbone:
    """Create ``timm.create_model(name, pretrained=False, features_only=True, ...)``.

    Args:
        name: timm model name, e.g. ``swin_tiny_patch4_window7_224``.
        out_indices: stages to output (Swin-T: ``(1, 2, 3)`` → strides 8, 16, 32).
        image_size: (H, W) of the network input in pixels; passed as ``img_size`` to models that
            take one (Swin builds its attention masks from it).
        kwargs: extra constructor arguments (e.g. ``embed_dim``, ``depths`` for a small variant).
    """
    extra = dict(kwargs or {})
    if name.startswith("swin"):
        extra.setdefault("img_size", tuple(int(v) for v in image_size))
    try:
        model = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **extra)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"cannot build camera backbone {name!r} with {extra}: {exc}") from exc
    return TimmBackbone(model=model)
