"""Builder: ``task: seg`` config → :class:`~bev_ddp.seg.model.DDPSegmentor` (explicit constructors, no registry)."""
from __future__ import annotations

from typing import Any

from bev_ddp.diffusion.encoding import ClassEmbeddingEncoder
from bev_ddp.errors import ConfigError, InputError
from bev_ddp.nn.ddp_head_schema import build_ddp_head, build_map_decoder
from bev_ddp.nn.checkpoint import load_model_checkpoint
from bev_ddp.nn.dense_inference import MultiScaleFlip
from bev_ddp.nn.image_encoder_schema import image_encoder_from_config, sliding_window_from_config
from bev_ddp.seg.heads import CrossEntropyObjective, FCNHead
from bev_ddp.seg.model import DDPSegmentor


def build_seg_model(cfg: Any) -> DDPSegmentor:
    """The DDP segmentor of a ``task: seg`` config."""
    m = cfg.model
    img_size = cfg.data.crop_size or (cfg.model.inference.window_crop or None)
    encoder = image_encoder_from_config(m, img_size)
    label_encoder = ClassEmbeddingEncoder(num_classes=m.num_classes, dims=m.ddp.map_channels, scale=m.ddp.label_scale)
    decoder = build_map_decoder(m.ddp, cond_channels=encoder.out_channels, out_channels=m.num_classes)
    head = build_ddp_head(m.ddp, decoder=decoder, label_encoder=label_encoder,
                          objective=CrossEntropyObjective(ignore_index=255))
    aux = None
    if m.aux_weight > 0:
        aux = FCNHead(in_channels=encoder.out_channels, channels=m.aux_channels, num_classes=m.num_classes,
                      num_groups=m.num_groups)
    model = DDPSegmentor(encoder=encoder, head=head, aux_head=aux, aux_weight=m.aux_weight, accumulate=m.accumulate,
                         window=sliding_window_from_config(m.inference), tta=tta_from_config(m))
    if m.checkpoint:
        load_model_checkpoint(model, m.checkpoint)
    return model


def tta_from_config(m: Any) -> MultiScaleFlip | None:
    """``model.tta_scales`` / ``model.tta_flip`` as a :class:`MultiScaleFlip`, or None when both are off."""
    if m.tta_scales is None and not m.tta_flip:
        return None
    try:
        return MultiScaleFlip(scales=tuple(float(v) for v in (m.tta_scales or [1.0])), flip=bool(m.tta_flip))
    except InputError as exc:
        raise ConfigError(f"model.tta_scales: {exc}") from exc
