"""Builder: ``task: depth`` config → :class:`~bev_ddp.depth.model.DDPDepthEstimator`."""
from __future__ import annotations

from typing import Any

from torch import nn

from bev_ddp.depth.encoding import ReLUDepthEncoder
from bev_ddp.depth.losses import SigLoss
from bev_ddp.depth.model import DDPDepthEstimator
from bev_ddp.errors import ConfigError
from bev_ddp.nn import MapDecoder
from bev_ddp.nn.checkpoint import load_model_checkpoint
from bev_ddp.nn.ddp_head_schema import build_ddp_head, build_map_decoder
from bev_ddp.nn.image_encoder_schema import image_encoder_from_config, sliding_window_from_config


def init_output_bias(decoder: MapDecoder, value: float) -> None:
    """Start the decoder output at ``value`` (the ReLU begins active, at the initial depth)."""
    final = [mod for mod in decoder.head.modules() if isinstance(mod, nn.Conv2d)][-1]
    nn.init.constant_(final.bias, value)


def build_depth_model(cfg: Any) -> DDPDepthEstimator:
    m = cfg.model
    if not 0 < m.min_depth < m.max_depth:
        raise ConfigError(f"need 0 < model.min_depth < model.max_depth, got {m.min_depth}, {m.max_depth}")
    encoder = image_encoder_from_config(m, cfg.data.crop_size or cfg.data.resize or m.inference.window_crop)
    if m.output_unit <= 0:
        raise ConfigError(f"model.output_unit must be positive, got {m.output_unit}")
    label_encoder = ReLUDepthEncoder(min_value=m.min_depth, max_value=m.max_depth, scale=m.ddp.label_scale,
                                     num_bins=m.num_bins, unit=m.output_unit,
                                     target_downsample=m.target_downsample)
    decoder = build_map_decoder(m.ddp, cond_channels=encoder.out_channels, out_channels=1)
    init_depth = m.init_depth if m.init_depth is not None else m.max_depth / 4
    if not m.min_depth < init_depth < m.max_depth:
        raise ConfigError(f"model.init_depth {init_depth} must lie inside ({m.min_depth}, {m.max_depth})")
    init_output_bias(decoder, (init_depth - m.min_depth) / m.output_unit)
    head = build_ddp_head(m.ddp, decoder=decoder, label_encoder=label_encoder,
                          objective=SigLoss(min_depth=m.min_depth, max_depth=m.max_depth, unit=m.output_unit))
    model = DDPDepthEstimator(encoder=encoder, head=head, flip_tta=m.flip_tta,
                              window=sliding_window_from_config(m.inference))
    if m.checkpoint:
        load_model_checkpoint(model, m.checkpoint)
    return model
