"""Backbones: mmdet layout switch, drop path, and pretrained files that load strictly (issue 17)."""
from __future__ import annotations

import logging
import re

import pytest
import timm
import torch
import torch.nn.functional as F

from bev_ddp.errors import InputError
from bev_ddp.nn.backbone import PadThenShiftSwinBlock, build_timm_backbone, load_backbone_weights
from bev_ddp.seg.encoder import build_image_encoder

SWIN, CONVNEXT = "swin_tiny_patch4_window7_224", "convnext_tiny"
TINY_CONVNEXT = dict(dims=(8, 16, 16, 32), depths=(1, 1, 2, 1))


def _timm_reference(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(1)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


@pytest.mark.slow  # two full-size timm models (Swin-T, ConvNeXt-T), as issue 17 asks
@pytest.mark.parametrize("name,kwargs", [(SWIN, {"dynamic_img_size": True}), (CONVNEXT, {})])
def test_timm_imagenet_file_loads_into_encoder_and_matches_timm(tmp_path, name, kwargs):
    reference = _timm_reference(name, **kwargs)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)  # timm's own names, head included
    size = {"img_size": (224, 224)} if name == SWIN else {}
    backbone = build_timm_backbone(name, checkpoint=str(path), **size)
    file_state = reference.state_dict()
    # every backbone tensor was filled from the file, by timm's name (features_only renames layers.0 -> layers_0)
    for key, value in backbone.state_dict().items():
        source = re.sub(r"^model\.(layers|stages|stem)_(\d+)\.", r"\1.\2.", key).removeprefix("model.")
        assert torch.equal(value, file_state[source]), key
    used = {re.sub(r"^model\.(layers|stages|stem)_(\d+)\.", r"\1.\2.", k).removeprefix("model.") for k in backbone.state_dict()}
    assert sorted(k for k in file_state if k not in used and not k.endswith(("relative_position_index", "attn_mask")))\
        == sorted(k for k in file_state if k.startswith(("head.", "norm.")))
    encoder = build_image_encoder(backbone=backbone, channels=16, num_groups=4).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = reference.forward_intermediates(x, intermediates_only=True)
        got = encoder.backbone(x)
        assert encoder(x).shape == (1, 16, 24, 24)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _fb_convnext_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt keys → the official (facebookresearch) release's keys."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^stem\.", "downsample_layers.0.", key)
        key = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
        key = key.replace(".conv_dw.", ".dwconv.").replace(".mlp.fc", ".pwconv")
        key = {"head.norm.weight": "norm.weight", "head.norm.bias": "norm.bias"}.get(key, key.replace("head.fc.", "head."))
        out[key] = value
    return out


@pytest.mark.parametrize("flavour", ["official", "mmcls"])
def test_official_and_mmcls_convnext_files(tmp_path, flavour):
    reference = _timm_reference(CONVNEXT, **TINY_CONVNEXT)
    state = _fb_convnext_names(reference.state_dict())
    out_norms = {}
    if flavour == "mmcls":  # mmcls names, under a segmentor's "backbone." prefix, with output norms norm0..norm3
        state = {k.replace(".dwconv.", ".depthwise_conv.").replace(".pwconv", ".pointwise_conv"): v
                 for k, v in state.items() if not k.startswith(("norm.", "head."))}
        out_norms = {i: (torch.rand(c) + 0.5, torch.randn(c)) for i, c in enumerate(TINY_CONVNEXT["dims"])}
        state.update({f"norm{i}.{n}": t for i, (w, b) in out_norms.items() for n, t in (("weight", w), ("bias", b))})
        state = {f"backbone.{k}": v for k, v in state.items()}
        state["decode_head.conv_seg.weight"] = torch.zeros(3)
    path = tmp_path / "convnext.pth"
    torch.save({"state_dict": state}, path)
    backbone = build_timm_backbone(CONVNEXT, checkpoint=str(path), mmdet_layout=flavour == "mmcls", **TINY_CONVNEXT).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = reference.forward_intermediates(x, intermediates_only=True)
        got = backbone(x)
    for i, (a, b) in enumerate(zip(got, want)):
        if out_norms:  # mmcls' LN2d: LayerNorm over channels, eps 1e-6
            b = F.layer_norm(b.permute(0, 2, 3, 1), b.shape[1:2], *out_norms[i], eps=1e-6).permute(0, 3, 1, 2)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_official_swin_file_loads_and_its_downsample_moves_to_the_next_stage(tmp_path):
    reference = _timm_reference(SWIN, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), dynamic_img_size=True)
    # official naming: each stage ends with the merging layer timm keeps at the start of the next, head without ".fc"
    official = {re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
                .replace("head.fc.", "head."): v for k, v in reference.state_dict().items()}
    assert "layers.0.downsample.reduction.weight" in official
    path = tmp_path / "swin_official.pth"
    torch.save({"model": official}, path)
    backbone = build_timm_backbone(SWIN, img_size=(224, 224), checkpoint=str(path), embed_dim=16, depths=(1, 1, 2, 1),
                                   num_heads=(1, 1, 2, 2)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(backbone(x), reference.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_partial_or_foreign_files_fail_naming_the_keys(tmp_path):
    reference = _timm_reference(CONVNEXT, **TINY_CONVNEXT)
    state = reference.state_dict()
    path = tmp_path / "bad.pth"
    torch.save({k: v for k, v in state.items() if k != "stages.1.blocks.0.conv_dw.weight"}, path)
    with pytest.raises(InputError, match=r"missing \(1\): model\.stages_1\.blocks\.0\.conv_dw\.weight"):
        build_timm_backbone(CONVNEXT, checkpoint=str(path), **TINY_CONVNEXT)
    torch.save({**state, "stages.1.blocks.0.extra": torch.zeros(1)}, path)
    with pytest.raises(InputError, match=r"stages\.1\.blocks\.0\.extra"):
        build_timm_backbone(CONVNEXT, checkpoint=str(path), **TINY_CONVNEXT)
    torch.save({"neck.conv.weight": torch.zeros(1)}, path)
    with pytest.raises(InputError, match="shares no parameter name"):
        build_timm_backbone(CONVNEXT, checkpoint=str(path), **TINY_CONVNEXT)
    torch.save(state, path)  # a ConvNeXt file for a Swin backbone
    with pytest.raises(InputError, match="does not fit the backbone"):
        build_timm_backbone(SWIN, img_size=(64, 64), checkpoint=str(path), embed_dim=16, depths=(1, 1, 1, 1),
                            num_heads=(1, 1, 2, 2))


def test_named_checkpoint_is_required_unless_scratch_is_allowed(tmp_path, caplog):
    missing = str(tmp_path / "swin_nuimages.pth")
    with pytest.raises(InputError, match="allow_scratch"):
        build_timm_backbone(CONVNEXT, checkpoint=missing, **TINY_CONVNEXT)
    with caplog.at_level(logging.WARNING, logger="bev_ddp.nn.backbone"):
        build_timm_backbone(CONVNEXT, checkpoint=missing, allow_scratch=True, **TINY_CONVNEXT)
    assert "random weights" in caplog.text and "swin_nuimages.pth" in caplog.text


def test_mmdet_layout_blocks_norms_and_drop_path():
    backbone = build_timm_backbone(SWIN, img_size=(64, 64), out_indices=(1, 2, 3), mmdet_layout=True,
                                   drop_path_rate=0.3, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2))
    blocks = [m for m in backbone.modules() if isinstance(m, PadThenShiftSwinBlock)]
    assert len(blocks) == 8
    # the shift is kept where the map (2×2 at stride 32) is smaller than the window
    assert all(b.window_size == (7, 7) for b in blocks) and blocks[-1].shift_size == (3, 3)
    rates = [b.drop_path1.drop_prob if hasattr(b.drop_path1, "drop_prob") else 0.0 for b in blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 8).tolist())  # mmdet: linear over all blocks
    assert list(backbone.out_norms) == ["1", "2", "3"]
    assert [n.normalized_shape[0] for n in backbone.out_norms.values()] == [16, 32, 64]
    feats = backbone.eval()(torch.randn(2, 3, 64, 64))
    # LayerNorm at identity init: zero mean, unit variance over channels at every pixel
    for f in feats:
        torch.testing.assert_close(f.mean(1), torch.zeros_like(f.mean(1)), atol=1e-5, rtol=0)
    with torch.no_grad():  # an input side that is not a multiple of the patch (4) is padded at the bottom/right
        odd = torch.randn(1, 3, 66, 62)
        for a, b in zip(backbone(odd), backbone(F.pad(odd, (0, 2, 0, 2)))):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(InputError, match="mmdet_layout"):
        build_timm_backbone("resnet18", mmdet_layout=True)


def test_config_flag_reaches_the_backbone(tmp_path):
    """``model.camera.allow_scratch`` (BEV) and ``model.backbone.allow_scratch`` (seg/depth) are passed through."""
    from pathlib import Path

    from bev_ddp.bev.build import build_camera_encoder
    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.config import load_config

    config = Path(__file__).resolve().parents[2] / "configs" / "bev" / "synth_tiny_camera_ddp.yaml"
    missing = f"model.camera.backbone_checkpoint={tmp_path / 'nuimages_swin_t.pth'}"
    cfg = load_config(config, [missing], schema=BEVConfig)
    with pytest.raises(InputError, match="allow_scratch"):
        build_camera_encoder(cfg.model.camera, image_size=cfg.data.image_size)
    cfg = load_config(config, [missing, "model.camera.allow_scratch=true"], schema=BEVConfig)
    assert build_camera_encoder(cfg.model.camera, image_size=cfg.data.image_size).backbone.out_norms is None

    from bev_ddp.seg.build import build_encoder
    from bev_ddp.seg.schema import SegConfig

    seg_config = config.parents[1] / "seg" / "synth_tiny.yaml"
    missing = f"model.backbone.checkpoint={tmp_path / 'swin_t_imagenet.pth'}"
    cfg = load_config(seg_config, [missing], schema=SegConfig)
    with pytest.raises(InputError, match="allow_scratch"):
        build_encoder(cfg.model, img_size=(64, 64))
    cfg = load_config(seg_config, [missing, "model.backbone.allow_scratch=true"], schema=SegConfig)
    assert build_encoder(cfg.model, img_size=(64, 64)).backbone.feature_specs
