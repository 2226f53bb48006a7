"""Swin weight conversion, proven against mmdet's own outputs (``swin_oracle.pt``) and its key manifest."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bev_ddp.convert.swin import convert_swin_state_dict
from bev_ddp.errors import InputError
from bev_ddp.nn.backbone import build_timm_backbone
from bev_ddp.nn.backbone_weights import unfold_to_timm_order

MANIFESTS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "manifests"
if not MANIFESTS.is_dir():  # a checkout outside the work tree layout
    MANIFESTS = Path("/work/shared/reference/manifests")
ORACLE = MANIFESTS / "swin_oracle.pt"
needs_oracle = pytest.mark.skipif(not ORACLE.is_file(), reason=f"reference oracle {ORACLE} not available")
needs_manifest = pytest.mark.skipif(not (MANIFESTS / "mmdet_swin_t.json").is_file(), reason="mmdet_swin_t.json not available")
SWIN = "swin_tiny_patch4_window7_224"


@pytest.fixture(scope="module")
def oracle():
    data = torch.load(ORACLE, weights_only=True)
    data["state_dict"] = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    return data


def _oracle_backbone(oracle, *, mmdet_layout: bool, img_size):
    cfg = oracle["config"]
    return build_timm_backbone(
        SWIN, img_size=img_size, mmdet_layout=mmdet_layout, out_indices=tuple(cfg["out_indices"]),
        embed_dim=cfg["embed_dims"], depths=tuple(cfg["depths"]), num_heads=tuple(cfg["num_heads"]),
        window_size=cfg["window_size"], drop_path_rate=0.0,
    ).eval()


@needs_oracle
def test_converted_mmdet_swin_reproduces_mmdet_outputs(oracle):
    state, notes = convert_swin_state_dict(oracle["state_dict"])
    backbone = _oracle_backbone(oracle, mmdet_layout=True, img_size=(64, 128))
    assert set(state) == set(backbone.state_dict())
    backbone.load_state_dict(state, strict=True)
    assert any("permuted" in n for n in notes) and any("relative_position_index" in n for n in notes)
    with torch.no_grad():
        for inp, outs in (("input", "outputs"), ("input_224", "outputs_224")):
            feats = backbone(oracle[inp])
            assert len(feats) == len(oracle[outs]) == 3
            for got, want in zip(feats, oracle[outs]):
                assert got.shape == want.shape
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@needs_oracle
def test_stock_timm_window_order_differs_where_maps_are_not_window_multiples(oracle):
    """timm rolls before padding: same weights, same 224×224 result, different 64×128 result."""
    state, _ = convert_swin_state_dict(oracle["state_dict"])
    norms = {k[len("out_norms."):]: v for k, v in state.items() if k.startswith("out_norms.")}
    stock = _oracle_backbone(oracle, mmdet_layout=False, img_size=(224, 224))
    stock.load_state_dict({k: v for k, v in state.items() if k.startswith("model.")}, strict=True)

    def with_norms(feats):  # mmdet's output norms applied by hand, so only the window order differs
        return [F.layer_norm(f.permute(0, 2, 3, 1), f.shape[1:2], norms[f"{i}.weight"], norms[f"{i}.bias"]).permute(0, 3, 1, 2)
                for i, f in zip(oracle["config"]["out_indices"], feats)]

    with torch.no_grad():
        at_224 = with_norms(stock(oracle["input_224"]))
        at_64x128 = with_norms(stock(oracle["input"]))
    for got, want in zip(at_224, oracle["outputs_224"]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    errors = [float((got - want).abs().max()) for got, want in zip(at_64x128, oracle["outputs"])]
    assert errors[0] < 1e-5  # stage 2 (8×16 map): its only block does not shift
    assert min(errors[1:]) > 0.1  # stages 3-4 shift maps that are not multiples of 7


def test_patch_merging_permutation_matches_unfold_and_x0123_concatenation():
    c = 3
    x = torch.randn(1, c, 2, 2)  # [B, C, kh, kw]
    unfolded = torch.nn.Unfold(kernel_size=2, stride=2)(x)[0, :, 0]  # mmdet order: c·4 + kh·2 + kw
    x0, x1, x2, x3 = x[0, :, 0, 0], x[0, :, 1, 0], x[0, :, 0, 1], x[0, :, 1, 1]  # official Swin / timm
    concat = torch.cat([x0, x1, x2, x3])
    weight = torch.randn(5, 4 * c)
    assert torch.allclose(weight @ unfolded, unfold_to_timm_order(weight) @ concat, atol=1e-6)
    assert torch.equal(unfold_to_timm_order(unfolded), concat)


@needs_manifest
def test_bevfusion_swin_t_manifest_maps_one_to_one():
    manifest = json.loads((MANIFESTS / "mmdet_swin_t.json").read_text())
    src = {k: torch.zeros(shape) for k, shape in manifest["keys"].items()}
    state, notes = convert_swin_state_dict(src)
    with torch.device("meta"):  # shapes and counts only
        backbone = build_timm_backbone(SWIN, out_indices=(1, 2, 3), img_size=(256, 704), mmdet_layout=True)
    own = backbone.state_dict()
    assert set(state) == set(own)
    assert all(state[k].shape == own[k].shape for k in own)
    buffers = [k for k in src if k.endswith("relative_position_index")]
    assert len(state) == len(src) - len(buffers)
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    assert trainable == manifest["total_parameters"] == 27_520_506


@needs_oracle
def test_unknown_or_foreign_keys_are_named(oracle):
    src = dict(oracle["state_dict"])
    src["stages.0.blocks.0.attn.w_msa.extra.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"stages\.0\.blocks\.0\.attn\.w_msa\.extra\.weight"):
        convert_swin_state_dict(src)
    with pytest.raises(InputError, match="not a Swin state dict"):
        convert_swin_state_dict({"conv1.weight": torch.zeros(1)})


@needs_oracle
def test_detector_file_loads_through_the_config_key(oracle, tmp_path):
    """An mmdet detector checkpoint (backbone under ``backbone.``, neck beside it) as ``backbone_checkpoint``."""
    path = tmp_path / "detector.pth"
    state = {f"backbone.{k}": v.half() if v.is_floating_point() else v for k, v in oracle["state_dict"].items()}
    torch.save({"meta": {}, "state_dict": {**state, "neck.lateral_convs.0.conv.weight": torch.zeros(2, 2, 1, 1)}}, path)
    cfg = oracle["config"]
    arch = dict(out_indices=tuple(cfg["out_indices"]), embed_dim=cfg["embed_dims"], depths=tuple(cfg["depths"]),
                num_heads=tuple(cfg["num_heads"]), drop_path_rate=0.0)
    backbone = build_timm_backbone(SWIN, img_size=(64, 128), mmdet_layout=True, checkpoint=str(path), **arch).eval()
    with torch.no_grad():
        for got, want in zip(backbone(oracle["input"]), oracle["outputs"]):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="mmdet_layout: true"):  # the output norms need somewhere to go
        build_timm_backbone(SWIN, img_size=(64, 128), checkpoint=str(path), **arch)
