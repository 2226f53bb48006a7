"""Config sections of the image encoder and of dense inference, shared by ``task: seg`` and ``task: depth``.

``model.backbone`` (timm backbone), ``model.neck_channels`` / ``model.num_groups`` (FPN and merge)
and ``model.inference`` (whole image or sliding windows).  The padding divisor of whole-image
inference is not a config key: the encoder declares it (:attr:`ImageEncoder.size_divisor`).
Sizes are ``[height, width]`` in pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from bev_ddp.config import to_plain
from bev_ddp.errors import ConfigError
from bev_ddp.nn.backbone import build_timm_backbone
from bev_ddp.nn.dense_inference import SlidingWindow
from bev_ddp.nn.image_encoder import ImageEncoder, build_image_encoder

log = logging.getLogger(__name__)


@dataclass
class BackboneSchema:
    """A timm backbone built with ``pretrained=False`` and ``features_only=True``."""

    name: str = "swin_tiny_patch4_window7_224"  # or convnext_tiny, ...
    out_indices: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    kwargs: dict[str, Any] = field(default_factory=dict)  # architecture overrides (embed_dim, depths, dims ...)
    checkpoint: Optional[str] = None  # local backbone weights (torch.load weights_only)
    allow_scratch: bool = False  # a named checkpoint that is missing: random weights + warning, not an error


@dataclass
class InferenceSchema:
    """Whole-image inference (``window_crop`` null) or sliding windows of ``window_crop`` every ``window_stride``."""

    window_crop: Optional[list[int]] = None
    window_stride: Optional[list[int]] = None


def image_encoder_from_config(model_cfg: Any, img_size: Optional[Sequence[int]]) -> ImageEncoder:
    """Backbone (``model.backbone``) → FPN → merge with ``model.neck_channels`` channels.

    ``img_size``: the training input (H, W) in pixels, for backbones that fix it (Swin); None = default.
    With a whole-model ``model.checkpoint`` the backbone file is not read (nor required): the
    whole model's weights, backbone included, are loaded after building.
    """
    b = model_cfg.backbone
    kwargs = to_plain(b.kwargs, tuples=True)  # timm's architecture arguments expect tuples
    whole = getattr(model_cfg, "checkpoint", None)
    backbone = build_timm_backbone(b.name, img_size=img_size, out_indices=list(b.out_indices),
                                   checkpoint=None if whole else b.checkpoint, allow_scratch=b.allow_scratch, **kwargs)
    if whole and b.checkpoint:
        log.info("model.backbone.checkpoint %s is not read: the backbone's weights come from model.checkpoint %s",
                 b.checkpoint, whole)
    return build_image_encoder(backbone=backbone, channels=model_cfg.neck_channels, num_groups=model_cfg.num_groups)


def sliding_window_from_config(inference_cfg: Any) -> Optional[SlidingWindow]:
    """The ``model.inference`` section's window, or None for whole-image inference."""
    if inference_cfg.window_crop is None:
        return None
    crop = tuple(int(v) for v in inference_cfg.window_crop)
    stride = tuple(int(v) for v in (inference_cfg.window_stride or [c * 2 // 3 for c in crop]))
    if len(crop) != 2 or len(stride) != 2:
        raise ConfigError(f"model.inference.window_crop / window_stride must be [height, width], got {crop}, {stride}")
    return SlidingWindow(crop=crop, stride=stride)  # type: ignore[arg-type]
