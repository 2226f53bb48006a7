"""Multi-scale image backbones from timm, with a declared output specification.

Used by the BEV camera branch (Swin-T stages 2-4 feed the LSS-FPN neck) and by the image
segmentation / depth encoder (all four stages feed the FPN).  timm builds the network with
``features_only=True``; Swin's feature maps come out channels-last (NHWC) and are permuted here
to NCHW so every consumer sees one layout.

The backbone *declares* what it outputs (:attr:`TimmBackbone.feature_specs`: channels and stride
per level, finest first); necks build themselves from that declaration.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import timm
import torch
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn.checkpoint import load_weights, read_state_dict

# key prefixes under which detector / segmentor checkpoints keep their backbone
BACKBONE_PREFIXES = ("backbone.", "model.", "encoders.camera.backbone.", "img_backbone.")


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


def build_timm_backbone(name: str, *, out_indices: Sequence[int] = (0, 1, 2, 3),
                        img_size: Optional[Sequence[int]] = None, checkpoint: Optional[str] = None,
                        **kwargs: Any) -> TimmBackbone:
    """Create ``timm.create_model(name, pretrained=False, features_only=True, ...)`` (never downloads).

    Args:
        name: timm model name, e.g. ``swin_tiny_patch4_window7_224`` or ``convnext_tiny``.
        out_indices: stages to output (Swin-T ``(1, 2, 3)`` → strides 8, 16, 32).
        img_size: (H, W) network input in pixels, passed to Swin (its attention masks depend on
            it); Swin is also built with ``dynamic_img_size`` so whole-image inference may use
            other sizes.
        checkpoint: optional local file of backbone weights, see :func:`load_backbone_weights`.
        kwargs: architecture overrides (``embed_dim``, ``depths``, ``dims`` ...) for small variants.
    """
    if "swin" in name:
        size = {"img_size": tuple(int(v) for v in img_size)} if img_size is not None else {}
        kwargs = {**size, "dynamic_img_size": True, **kwargs}
    try:
        model = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:  # unknown model or bad architecture keyword
        raise InputError(f"cannot build backbone {name!r} with {kwargs}: {exc}") from exc
    backbone = TimmBackbone(model=model)
    if checkpoint:
        load_backbone_weights(backbone, checkpoint)
    return backbone


def load_backbone_weights(backbone: TimmBackbone, path: str | Path) -> None:
    """Load a local checkpoint into ``backbone.model`` (``torch.load(weights_only=True)``).

    Keys may sit under one of :data:`BACKBONE_PREFIXES` (a detector's or segmentor's checkpoint);
    the prefix that matches the backbone's keys is stripped.  Partial matches load with a
    :class:`~bev_ddp.nn.checkpoint.CheckpointMismatchWarning`; a file sharing no key is an error.
    """
    own = set(backbone.model.state_dict())
    keys = set(read_state_dict(path))
    best = ""
    for prefix in BACKBONE_PREFIXES:
        stripped = {k[len(prefix):] for k in keys if k.startswith(prefix)}
        if len(stripped & own) > len({k[len(best):] for k in keys if k.startswith(best)} & own):
            best = prefix
    if not {k[len(best):] for k in keys if k.startswith(best)} & own:
        raise InputError(f"backbone checkpoint {path} shares no parameter name with the backbone")
    load_weights(backbone.model, path, prefix=best)
