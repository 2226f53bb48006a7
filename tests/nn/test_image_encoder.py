"""Image encoder: timm backbones (NHWC Swin → NCHW), FPN, multi-stage merge."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.errors import InputError
from bev_ddp.nn.fpn import FPN, MultiStageMerge
from bev_ddp.nn.backbone import build_timm_backbone, load_backbone_weights
from bev_ddp.nn.image_encoder import build_image_encoder

TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4)
TINY_CONVNEXT = dict(dims=(16, 32, 32, 64), depths=(1, 1, 1, 1))


def test_swin_outputs_are_nchw_and_match_declared_levels():
    backbone = build_timm_backbone("swin_tiny_patch4_window7_224", img_size=(32, 64), **TINY_SWIN)
    assert backbone.channels_last
    assert [(s.channels, s.stride) for s in backbone.feature_specs] == [(16, 4), (32, 8), (64, 16), (128, 32)]
    x = torch.randn(1, 3, 32, 64)
    feats = backbone(x)
    assert [tuple(f.shape) for f in feats] == [(1, 16, 8, 16), (1, 32, 4, 8), (1, 64, 2, 4), (1, 128, 1, 2)]
    raw = backbone.model(x)[0]  # [B, H, W, C] from timm
    assert torch.equal(feats[0], raw.permute(0, 3, 1, 2))
    # whole-image inference feeds other sizes than the training crop
    assert [tuple(f.shape[-2:]) for f in backbone(torch.randn(1, 3, 64, 96))] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_convnext_is_already_nchw():
    backbone = build_timm_backbone("convnext_tiny", **TINY_CONVNEXT)
    assert not backbone.channels_last
    feats = backbone(torch.randn(1, 3, 32, 64))
    assert [f.shape[1] for f in feats] == [16, 32, 32, 64] and feats[0].shape[-2:] == (8, 16)


def test_fpn_top_down_pathway_reaches_the_finest_level():
    fpn = FPN(in_channels=[4, 8], out_channels=8, num_groups=2)
    fine, coarse = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)
    out = fpn([fine, coarse])
    assert [tuple(o.shape) for o in out] == [(1, 8, 8, 8), (1, 8, 4, 4)]
    # changing only the coarse input changes the fine output (top-down addition)
    out2 = fpn([fine, coarse + 1.0 * torch.randn_like(coarse)])
    assert not torch.allclose(out[0], out2[0])
    with pytest.raises(ValueError, match="levels"):
        fpn([fine])


def test_merge_and_encoder_condition_at_quarter_resolution():
    merge = MultiStageMerge(in_channels=[8, 8, 8], out_channels=16, num_groups=4)
    out = merge([torch.randn(2, 8, 12, 20), torch.randn(2, 8, 6, 10), torch.randn(2, 8, 3, 5)])
    assert out.shape == (2, 16, 12, 20)
    enc = build_image_encoder(backbone=build_timm_backbone("convnext_tiny", **TINY_CONVNEXT), channels=16, num_groups=4)
    assert enc(torch.randn(2, 3, 64, 96)).shape == (2, 16, 16, 24) and enc.stride == 4
    with pytest.raises(InputError, match="NaN"):
        enc(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        enc(torch.randn(1, 1, 32, 32))


def test_backbone_weights_load_from_local_file(tmp_path):
    src = build_timm_backbone("convnext_tiny", **TINY_CONVNEXT)
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in src.model.state_dict().items()}}, path)
    dst = build_timm_backbone("convnext_tiny", checkpoint=str(path), **TINY_CONVNEXT)
    for (k, a), b in zip(src.model.state_dict().items(), dst.model.state_dict().values()):
        assert torch.equal(a, b), k
    torch.save({"unrelated.weight": torch.zeros(1)}, path)
    with pytest.raises(InputError, match="shares no parameter"):
        load_backbone_weights(dst, str(path))
    with pytest.raises(InputError, match="not found"):
        load_backbone_weights(dst, str(tmp_path / "missing.pth"))


def test_unknown_backbone_raises_input_error():
    with pytest.raises(InputError, match="not_a_model"):
        build_timm_backbone("not_a_model")
