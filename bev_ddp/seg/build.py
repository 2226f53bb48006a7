"""Builders: config sections → modules (explicit constructors, no registry)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from bev_ddp.diffusion.encoding import ClassEmbeddingEncoder
from bev_ddp.errors import ConfigError
from bev_ddp.nn import DDPHead, MapDecoder
from bev_ddp.nn.backbone import build_timm_backbone
from bev_ddp.seg.encoder import ImageEncoder, build_image_encoder
from bev_ddp.seg.heads import CrossEntropyObjective, FCNHead
from bev_ddp.seg.inference import SlidingWindow
from bev_ddp.seg.model import DDPSegmentor

SCHEDULES = ("cosine", "linear")


def _plain(node: Any) -> Any:
    """Config node -> plain Python (lists become tuples, as timm's architecture arguments expect)."""
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def build_encoder(model_cfg: Any, img_size: Optional[Sequence[int]]) -> ImageEncoder:
    """Backbone (``model.backbone``) → FPN → merge with ``model.neck_channels`` channels."""
    b = model_cfg.backbone
    kwargs = _plain(b.kwargs)
    backbone = build_timm_backbone(b.name, img_size=img_size, out_indices=list(b.out_indices),
                                   checkpoint=b.checkpoint, allow_scratch=b.allow_scratch, **kwargs)
    return build_image_encoder(backbone=backbone, channels=model_cfg.neck_channels, num_groups=model_cfg.num_groups)


def build_decoder(model_cfg: Any, *, cond_channels: int, map_channels: int, out_channels: int) -> MapDecoder:
    d = model_cfg.decoder
    return MapDecoder(cond_channels=cond_channels, map_channels=map_channels, out_channels=out_channels,
                      embed_dims=d.embed_dims, depth=d.depth, num_heads=d.num_heads, num_points=d.num_points,
                      ffn_dims=d.ffn_dims, dropout=d.dropout)


def build_window(inference_cfg: Any) -> Optional[SlidingWindow]:
    if inference_cfg.window_crop is None:
        return None
    crop = tuple(int(v) for v in inference_cfg.window_crop)
    stride = tuple(int(v) for v in (inference_cfg.window_stride or [c * 2 // 3 for c in crop]))
    if len(crop) != 2 or len(stride) != 2:
        raise ConfigError(f"model.inference.window_crop / window_stride must be [height, width], got {crop}, {stride}")
    return SlidingWindow(crop=crop, stride=stride)  # type: ignore[arg-type]


def check_schedule(name: str) -> str:
    if name not in SCHEDULES:
        raise ConfigError(f"model.schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    return name


def build_seg_model(cfg: Any) -> DDPSegmentor:
    """The DDP segmentor of a ``task: seg`` config."""
    m = cfg.model
    img_size = cfg.data.crop_size or (cfg.model.inference.window_crop or None)
    encoder = build_encoder(m, img_size)
    label_encoder = ClassEmbeddingEncoder(num_classes=m.num_classes, dims=m.decoder.embed_dims, scale=m.label_scale)
    decoder = build_decoder(m, cond_channels=encoder.out_channels, map_channels=label_encoder.channels,
                            out_channels=m.num_classes)
    head = DDPHead(decoder=decoder, label_encoder=label_encoder, objective=CrossEntropyObjective(ignore_index=255),
                   schedule=check_schedule(m.schedule), td=m.td)
    aux = None
    if m.aux_weight > 0:
        aux = FCNHead(in_channels=encoder.out_channels, channels=m.aux_channels, num_classes=m.num_classes,
                      num_groups=m.num_groups)
    return DDPSegmentor(encoder=encoder, head=head, aux_head=aux, aux_weight=m.aux_weight, accumulate=m.accumulate,
                        window=build_window(m.inference), size_divisor=m.inference.size_divisor)
