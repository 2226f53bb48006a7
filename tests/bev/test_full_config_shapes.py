"""Shapes of every stage at the full nuScenes configs (batch 1, CPU, forward only under no_grad)."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.bev.build import build_bev_model, build_head
from bev_ddp.bev.heads import BEVSegmentationHead, DDPBEVHead

from bev_test_helpers import load_bev_config, random_sample  # noqa: I001
from bev_ddp.data.structures import collate_samples

pytestmark = pytest.mark.filterwarnings("ignore::bev_ddp.ops.ExtensionFallbackWarning")


@pytest.fixture(scope="module")
def fusion_model():
    torch.manual_seed(0)
    cfg = load_bev_config("nuscenes_fusion_baseline.yaml")
    return cfg, build_bev_model(cfg).eval()


@pytest.fixture(scope="module")
def full_batch():
    return collate_samples([random_sample(image_size=(256, 704), num_points=20000, seed=3)])


def test_camera_branch_shapes(fusion_model, full_batch):
    _, model = fusion_model
    cam = model.camera
    specs = [(s.channels, s.stride) for s in cam.backbone.feature_specs]
    assert specs == [(192, 8), (384, 16), (768, 32)]  # Swin-T stages 2-4
    with torch.no_grad():
        images = full_batch["img"].flatten(0, 1)  # [6, 3, 256, 704]
        feats = cam.backbone(images)
        assert [tuple(f.shape) for f in feats] == [(6, 192, 32, 88), (6, 384, 16, 44), (6, 768, 8, 22)]
        neck = cam.neck(feats)
        assert [tuple(f.shape) for f in neck] == [(6, 256, 32, 88), (6, 256, 16, 44)]
        vt = cam.view_transform
        assert vt.depth.cells == 118 and vt.grid == (1, 256, 256)
        assert vt.frustum.shape == (118, 32, 88, 4)  # 6 cameras -> 1,993,728 frustum points
        lifted = vt.lift(neck[0])
        assert lifted.shape == (6, 118, 32, 88, 80)
        # depth is a distribution over bins: summing the lifted context over D gives the context back
        context = vt.depthnet(neck[0])[:, 118:].permute(0, 2, 3, 1)
        torch.testing.assert_close(lifted.sum(dim=1), context, rtol=1e-4, atol=1e-4)
        bev = cam(full_batch["img"], full_batch["geometry"])
        assert bev.shape == (1, 80, 128, 128)


def test_lidar_branch_shapes(fusion_model, full_batch):
    _, model = fusion_model
    with torch.no_grad():
        voxels = model.lidar.voxelizer(full_batch["points"])
        assert voxels.features.shape[1] == 5 and voxels.coords.shape[1] == 4
        upper = torch.tensor([1, 1024, 1024, 41])
        assert bool((voxels.coords >= 0).all()) and bool((voxels.coords < upper).all())
        bev = model.lidar.sparse_encoder(voxels)
    assert bev.shape == (1, 256, 128, 128)
    assert bev.abs().sum() > 0


def test_fuser_decoder_and_heads_shapes(fusion_model):
    cfg, model = fusion_model
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fused = model.fuser([torch.randn(1, 80, 128, 128, generator=gen), torch.randn(1, 256, 128, 128, generator=gen)])
        assert fused.shape == (1, 256, 128, 128)
        stages = model.decoder_backbone(fused)
        assert [tuple(s.shape) for s in stages] == [(1, 128, 128, 128), (1, 256, 64, 64)]
        feats = model.decoder_neck(stages)
        assert feats.shape == (1, 512, 128, 128)
        assert isinstance(model.head, BEVSegmentationHead)
        assert model.head.transform(feats).shape == (1, 512, 200, 200)
        preds = model.head.predict(feats, steps=[1, 3])
    assert preds[1].probs.shape == (1, 6, 200, 200)
    assert preds[3] is preds[1] and torch.count_nonzero(preds[1].uncertainty) == 0


def _expected_ddp_head_params(*, cond: int, dims: int, map_channels: int, layers: int, heads: int, points: int,
                              ffn: int, classes: int, time_dims: int, freqs: int, head_kernel: int = 1) -> int:
    """Parameter count of the DDP BEV head from its description (DESIGN.md, paper §3)."""
    fuse = (map_channels + cond) * dims + dims  # 1x1 conv on concat(noisy map, condition)
    time = freqs + (2 * freqs + 1) * time_dims + time_dims + time_dims * time_dims + time_dims
    attention = (dims * heads * points * 2 + heads * points * 2) + (dims * heads * points + heads * points)
    attention += 2 * (dims * dims + dims)  # value and output projections
    layer = attention + 2 * 2 * dims + (dims * ffn + ffn) + (ffn * dims + dims)  # + two LayerNorms + FFN
    film = time_dims * 2 * dims + 2 * dims  # SiLU -> Linear(time, 2·dims) -> (scale, shift)
    out = dims * classes * head_kernel**2 + classes  # k x k output conv
    embedding = (classes + 1) * map_channels
    return fuse + time + layers * (layer + film) + out + embedding


def test_ddp_head_parameter_count_and_full_size_sampling():
    torch.manual_seed(0)
    cfg = load_bev_config("nuscenes_fusion_ddp.yaml")
    head = build_head(cfg.model.head, in_channels=512, classes=list(cfg.data.classes), xbound=cfg.data.xbound,
                      ybound=cfg.data.ybound).eval()
    assert isinstance(head, DDPBEVHead)
    count = sum(p.numel() for p in head.parameters())
    expected = _expected_ddp_head_params(cond=512, dims=256, map_channels=256, layers=5, heads=8, points=4, ffn=1024,
                                         classes=6, time_dims=1024, freqs=8, head_kernel=3)
    assert count == expected == 7_318_766  # the authors' 1x1 output conv: 7,306,478
    feats = torch.randn(1, 512, 128, 128, generator=torch.Generator().manual_seed(1))
    preds = head.predict(feats, steps=[2], seed=0)
    pred = preds[2]
    assert pred.probs.shape == (1, 6, 200, 200)
    assert pred.uncertainty.shape == (1, 200, 200)
    assert len(pred.step_probs) == 2
    assert float(pred.probs.min()) >= 0 and float(pred.probs.max()) <= 1
    assert float(pred.uncertainty.min()) >= 0 and float(pred.uncertainty.max()) <= 1
