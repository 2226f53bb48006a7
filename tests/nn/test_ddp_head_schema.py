"""One DDP-head schema and builder for every task: each key reaches the module, errors name the key."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bev_ddp.diffusion.encoding import ClassEmbeddingEncoder, ContinuousEncoder
from bev_ddp.diffusion.sampler import DDIMSampler
from bev_ddp.diffusion.schedule import NoiseSchedule
from bev_ddp.errors import ConfigError
from bev_ddp.nn import DDPHead, MapDecoder
from bev_ddp.nn.backbone import build_timm_backbone
from bev_ddp.nn.ddp_head_schema import DDPHeadSchema, build_ddp_head, build_map_decoder
from bev_ddp.nn.image_encoder import build_image_encoder
from ddp_nn_helpers import ce

SMALL = dict(map_channels=8, embed_dims=16, depth=2, num_heads=2, num_points=2, ffn_dims=32)


def _cfg(**kw):
    return OmegaConf.structured(DDPHeadSchema(**{**SMALL, **kw}))


def _built(cfg, seed=0):
    torch.manual_seed(seed)
    label_encoder = ClassEmbeddingEncoder(num_classes=3, dims=cfg.map_channels, scale=cfg.label_scale)
    decoder = build_map_decoder(cfg, cond_channels=6, out_channels=3)
    return build_ddp_head(cfg, decoder=decoder, label_encoder=label_encoder, objective=ce)


def test_builder_equals_the_hand_built_head():
    cfg = _cfg(dropout=0.1, schedule="linear", td=0.5, label_scale=0.02)
    head = _built(cfg)
    torch.manual_seed(0)
    encoder = ClassEmbeddingEncoder(num_classes=3, dims=8, scale=0.02)
    decoder = MapDecoder(cond_channels=6, map_channels=8, out_channels=3, embed_dims=16, depth=2, num_heads=2,
                         num_points=2, ffn_dims=32, dropout=0.1)
    manual = DDPHead(decoder=decoder, objective=ce, sampler=DDIMSampler(schedule=NoiseSchedule(name="linear"), td=0.5),
                     label_encoder=encoder)
    ours, theirs = head.state_dict(), manual.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert head.schedule.name == "linear" and head.sampler.td == 0.5 and head.label_encoder.scale == 0.02
    assert head.schedule is head.sampler.schedule  # training noises with the sampler's own schedule
    assert head.steps == cfg.steps == 3 and manual.steps == DDPHead.DEFAULT_STEPS
    assert [m.p for m in head.decoder.modules() if isinstance(m, torch.nn.Dropout)][:1] == [0.1]


def test_bad_values_raise_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.ddp: .*schedule 'quadratic'"):
        _built(_cfg(schedule="quadratic"))
    with pytest.raises(ConfigError, match=r"model\.ddp: .*depth"):
        _built(_cfg(depth=0))
    with pytest.raises(ConfigError, match=r"model\.head\.ddp: .*map_channels"):
        build_ddp_head(_cfg(), decoder=build_map_decoder(_cfg(), cond_channels=6, out_channels=1), objective=ce,
                       key="model.head.ddp", label_encoder=ContinuousEncoder(min_value=0.1, max_value=10.0))


def test_image_encoder_declares_its_padding_divisor():
    dims = dict(dims=(16, 32, 32, 64), depths=(1, 1, 1, 1))
    four = build_image_encoder(backbone=build_timm_backbone("convnext_tiny", **dims), channels=16, num_groups=4)
    three = build_image_encoder(backbone=build_timm_backbone("convnext_tiny", out_indices=[0, 1, 2], **dims),
                                channels=16, num_groups=4)
    assert (four.stride, four.size_divisor) == (4, 32)
    assert (three.stride, three.size_divisor) == (4, 16)


def test_time_input_reaches_the_head_and_bad_values_name_the_key():
    assert _built(_cfg()).time_input == "log_snr" and _built(_cfg(time_input="t")).time_input == "t"
    with pytest.raises(ConfigError, match=r"model\.ddp: time_input must be one of log_snr, t, got 'sigma'"):
        _built(_cfg(time_input="sigma"))
    from pathlib import Path

    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.config import load_config
    from bev_ddp.seg.schema import SegConfig

    configs = Path(__file__).resolve().parents[2] / "configs"
    with pytest.raises(ConfigError, match=r"model\.ddp\.time_input must be one of log_snr, t, got 'sigma'"):
        load_config(configs / "seg" / "synth_tiny.yaml", ["model.ddp.time_input=sigma"], schema=SegConfig)
    bev = load_config(configs / "bev" / "synth_tiny_camera_ddp.yaml", ["model.head.ddp.time_input=t"], schema=BEVConfig)
    assert bev.model.head.ddp.time_input == "t"
    with pytest.raises(ConfigError, match=r"model\.head\.ddp\.time_input"):
        load_config(configs / "bev" / "synth_tiny_camera_ddp.yaml", ["model.head.ddp.time_input=T"], schema=BEVConfig)
