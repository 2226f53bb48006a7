"""Multi-scale image backbones from timm, with a declared output specification.

Used by the BEV camera branch (Swin-T stages 2-4 feed the LSS-FPN neck) and by the image
segmentation / depth encoder (all four stages feed the FPN).  timm builds the network with
``features_only=True``; Swin's feature maps come out channels-last (NHWC) and are permuted here
to NCHW so every consumer sees one layout.

The backbone *declares* what it outputs (:attr:`TimmBackbone.feature_specs`: channels and stride
per level, finest first); necks build themselves from that declaration.

``mmdet_layout=True`` makes the network compute what mmdet's backbones (BEVFusion's camera Swin-T,
the DDP authors' Swin / ConvNeXt) compute from the same weights:

* Swin: each shifted-window block pads the stage map to a multiple of the window *before* the
  cyclic shift (:class:`PadThenShiftSwinBlock`; timm shifts, then pads) and keeps the window and
  its shift even where the map is smaller than the window (timm's ``always_partition``).  The two
  orders agree only where every stage map is a multiple of the window (224×224 input); at
  BEVFusion's 256×704 none is.
* Swin: an input whose sides are not multiples of the patch size is padded at the bottom/right.
* one LayerNorm per output stage (mmdet's ``norm{i}``; ``out_norms.{i}`` here), applied over
  channels before the map is returned.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import PatchEmbed
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn.backbone_weights import load_backbone_weights

__all__ = ["IMAGENET_NORMALISATION", "FeatureSpec", "ImageNormalisation", "PadThenShiftSwinBlock", "TimmBackbone",
           "build_timm_backbone", "image_normalisation", "load_backbone_weights", "use_pad_then_shift"]

log = logging.getLogger(__name__)

# LayerNorm eps of the output norms in mmdet's Swin (nn.LayerNorm default) and mmcls' ConvNeXt (LN2d)
OUT_NORM_EPS = {"swin": 1e-5, "convnext": 1e-6}


@dataclass(frozen=True)
class ImageNormalisation:
    """Per-channel RGB mean and std (of images scaled to [0, 1]) a backbone was pretrained with:
    what timm's ``pretrained_cfg`` carries as ``mean`` / ``std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """image [..., 3, H, W] in [0, 1] -> ``(image - mean) / std``, same shape and dtype."""
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(3, 1, 1)
        return (image - mean) / std


IMAGENET_NORMALISATION = ImageNormalisation(mean=tuple(IMAGENET_DEFAULT_MEAN), std=tuple(IMAGENET_DEFAULT_STD))


def image_normalisation(name: str) -> ImageNormalisation:
    """The normalisation of timm backbone ``name`` from its pretrained config (ImageNet's when timm
    has none for it); read without building or downloading anything."""
    pretrained = timm.models.get_pretrained_cfg(name) if timm.models.is_model(name) else None
    if pretrained is None or pretrained.mean is None or pretrained.std is None:
        return IMAGENET_NORMALISATION
    return ImageNormalisation(mean=tuple(float(v) for v in pretrained.mean), std=tuple(float(v) for v in pretrained.std))


@dataclass(frozen=True)
class FeatureSpec:
    """One output level of an encoder: ``channels`` and ``stride`` (input pixels per feature pixel)."""

    channels: int
    stride: int


class PadThenShiftSwinBlock(SwinTransformerBlock):
    """timm's Swin block with mmdet's window order: pad to a multiple of the window, then roll.

    timm's block rolls the unpadded map and pads afterwards, so where a map side is not a multiple of
    the window the padded cells sit at a different place in the shifted windows; the attention then
    differs (≈1.5 on random inputs at 64×128).  Parameters, buffers and the attention mask
    construction are timm's own; only the order of padding and shifting changes.
    """

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, H, W, C] (after norm1) -> window attention output [B, H, W, C]."""
        _, H, W, C = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (ww - W % ww) % ww, 0, (wh - H % wh) % wh))  # [B, Hp, Wp, C]
        _, Hp, Wp, _ = x.shape
        has_shift = any(self.shift_size)
        if has_shift:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_area, C)  # [B·nW, wh·ww, C]
        mask = self.get_attn_mask(x) if self.dynamic_mask else self.attn_mask  # built on the padded map
        windows = self.attn(windows, mask=mask).view(-1, wh, ww, C)
        x = window_reverse(windows, self.window_size, Hp, Wp)  # [B, Hp, Wp, C]
        if has_shift:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :H, :W, :].contiguous()


def use_pad_then_shift(model: nn.Module) -> int:
    """Switch every timm ``SwinTransformerBlock`` in ``model`` to :class:`PadThenShiftSwinBlock`.

    The blocks keep their parameters and buffers; only ``_attn`` changes.  Returns the number of
    blocks switched.
    """
    count = 0
    for module in model.modules():
        if type(module) is SwinTransformerBlock:
            module.__class__ = PadThenShiftSwinBlock
            count += 1
    return count


class TimmBackbone(nn.Module):
    """A timm model run with ``features_only=True``; outputs NCHW maps at the declared levels.

    Args:
        model: a timm feature extractor (``timm.create_model(..., features_only=True)``).
        out_norms: optional LayerNorm per output stage, keyed by the stage index (``"1"`` for the
            stride-8 stage of Swin), in output order; applied over channels.
    """

    def __init__(self, *, model: nn.Module, out_norms: Optional[nn.ModuleDict] = None):
        super().__init__()
        info = getattr(model, "feature_info", None)
        if info is None:
            raise TypeError("TimmBackbone needs a timm model built with features_only=True")
        self.model = model
        self.channels_last = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")
        self.feature_specs: tuple[FeatureSpec, ...] = tuple(
            FeatureSpec(channels=int(c), stride=int(s)) for c, s in zip(info.channels(), info.reduction())
        )
        if out_norms is not None and len(out_norms) != len(self.feature_specs):
            raise ValueError(f"{len(out_norms)} output norms for {len(self.feature_specs)} output levels")
        self.out_norms = out_norms

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [N, 3, H, W] -> one [N, C_l, H / s_l, W / s_l] map per declared level."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"backbone images must have shape [N, 3, H, W], got {tuple(images.shape)}")
        feats = list(self.model(images))
        if self.out_norms is not None:
            norms = list(self.out_norms.values())
            if self.channels_last:
                feats = [norm(f) for norm, f in zip(norms, feats)]  # [N, H, W, C]
            else:
                feats = [norm(f.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) for norm, f in zip(norms, feats)]
        if self.channels_last:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]  # NHWC -> [N, C, H, W]
        return feats


def _family(name: str) -> str:
    for family in OUT_NORM_EPS:
        if family in name:
            return family
    return ""


def build_timm_backbone(name: str, *, out_indices: Sequence[int] = (0, 1, 2, 3),
                        img_size: Optional[Sequence[int]] = None, checkpoint: Optional[str] = None,
                        allow_scratch: bool = False, mmdet_layout: bool = False, **kwargs: Any) -> TimmBackbone:
    """Create ``timm.create_model(name, pretrained=False, features_only=True, ...)`` (never downloads).

    Args:
        name: timm model name, e.g. ``swin_tiny_patch4_window7_224`` or ``convnext_tiny``.
        out_indices: stages to output (Swin-T ``(1, 2, 3)`` → strides 8, 16, 32).
        img_size: (H, W) network input in pixels, passed to Swin (its attention masks depend on
            it); Swin is also built with ``dynamic_img_size`` so whole-image inference may use
            other sizes.
        checkpoint: local file of pretrained backbone weights, loaded strictly (see
            :func:`load_backbone_weights` for the formats).
        allow_scratch: if ``checkpoint`` names a file that does not exist, start from random
            weights with a warning instead of raising (``bev-ddp info`` / ``eval`` of a trained
            model, or a deliberate from-scratch run).  A config that names no file always starts
            from random weights, which is logged.
        mmdet_layout: compute what mmdet's backbone computes from the same weights (module
            docstring): Swin pads before the cyclic shift, and every output stage gets a LayerNorm.
        kwargs: passed to timm: architecture overrides (``embed_dim``, ``depths``, ``dims`` ...)
            and ``drop_path_rate`` (stochastic depth, linear over the blocks as in mmdet).
    """
    family = _family(name)
    if family == "swin":
        size = {"img_size": tuple(int(v) for v in img_size)} if img_size is not None else {}
        # mmdet also pads an input that is not a multiple of the patch size at the bottom/right
        layout = {}
        if mmdet_layout:
            layout = {"always_partition": True, "embed_layer": partial(PatchEmbed, dynamic_img_pad=True)}
        kwargs = {**size, "dynamic_img_size": True, **layout, **kwargs}
    elif mmdet_layout and not family:
        raise InputError(f"mmdet_layout is defined for Swin and ConvNeXt backbones, not {name!r}")
    try:
        model = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:  # unknown model or bad architecture keyword
        raise InputError(f"cannot build backbone {name!r} with {kwargs}: {exc}") from exc
    out_norms = None
    if mmdet_layout:
        if family == "swin" and use_pad_then_shift(model) == 0:
            raise InputError(f"mmdet_layout: {name!r} has no timm SwinTransformerBlock to switch to pad-then-shift")
        out_norms = nn.ModuleDict({
            str(stage): nn.LayerNorm(int(c), eps=OUT_NORM_EPS[family])
            for stage, c in zip(out_indices, model.feature_info.channels())
        })
    backbone = TimmBackbone(model=model, out_norms=out_norms)
    _init_from_checkpoint(backbone, name, checkpoint, allow_scratch)
    return backbone


def _init_from_checkpoint(backbone: TimmBackbone, name: str, checkpoint: Optional[str], allow_scratch: bool) -> None:
    """Load ``checkpoint`` strictly, or say in the log that ``backbone`` starts from random weights."""
    if not checkpoint:
        log.info("backbone %s starts from random weights (no backbone checkpoint configured)", name)
        return
    if Path(checkpoint).is_file():
        load_backbone_weights(backbone, checkpoint)
        return
    if not allow_scratch:
        raise InputError(
            f"backbone checkpoint {checkpoint} not found: download the pretrained file this config expects "
            "(bev_ddp/nn/README.md), or set allow_scratch=true to start the backbone from random weights"
        )
    log.warning("backbone checkpoint %s not found: %s starts from random weights (allow_scratch=true)", checkpoint, name)
