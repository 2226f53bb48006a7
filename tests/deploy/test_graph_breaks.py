"""torch.compile / torch.export trace the camera path, fuser, decoder and DDP head without graph
breaks at our ops: bev_pool and ms_deform_attn appear as single custom-op nodes."""
from __future__ import annotations

import pytest
import torch
import torch._dynamo

from bev_ddp.bev.build import build_bev_model
from bev_ddp.data.structures import collate_samples
from bev_ddp.deploy.stages import CameraStage, MapStage
from bev_ddp.ops import _extension

from bev_test_helpers import load_bev_config, random_sample  # noqa: I001

pytestmark = pytest.mark.skipif(_extension.load("cpu") is None, reason="needs the compiled CPU extension "
                                "(the custom ops dispatch to it)")


@pytest.fixture(scope="module")
def tiny_fusion():
    torch.manual_seed(0)
    model = build_bev_model(load_bev_config("synth_tiny_fusion_ddp.yaml", "model.head.ddp.depth=1")).eval()
    sample = random_sample(seed=0, image_size=(96, 176), num_points=2000, grid=(64, 64), extent=32.0)
    batch = collate_samples([sample])
    g = batch["geometry"]
    camera_args = (batch["img"], g.intrinsics, g.camera2lidar, g.img_aug, g.lidar_aug, torch.ones(1, 6))
    with torch.no_grad():
        maps = (CameraStage(model.camera)(*camera_args), model.lidar_features(batch))
    return model, camera_args, maps


def _ops_in(graphs) -> set[str]:
    return {str(node.target) for gm in graphs for node in gm.graph.nodes if str(node.target).startswith("bev_ddp.")}


def test_camera_path_has_no_graph_break(tiny_fusion):
    model, camera_args, _ = tiny_fusion
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(CameraStage(model.camera))(*camera_args)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert _ops_in(explained.graphs) == {"bev_ddp.bev_pool.default"}


def test_fuser_decoder_and_ddp_head_have_no_graph_break(tiny_fusion):
    model, _, maps = tiny_fusion
    stage = MapStage(model, steps=2)
    noise = torch.randn(stage.noise_shape(1, tuple(maps[0].shape[-2:])))
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(stage)(*maps, noise)
    assert explained.graph_break_count == 0, explained.break_reasons
    ops = [str(n.target) for gm in explained.graphs for n in gm.graph.nodes if str(n.target).startswith("bev_ddp.")]
    assert ops == ["bev_ddp.ms_deform_attn.default"] * 2  # one decoder layer x two unrolled steps


def test_export_keeps_the_ops_as_nodes_and_matches_eager(tiny_fusion):
    """torch.export (non-strict: the fake kernels give the shapes) of the camera stage with its
    geometry; the exported program computes what the eager module computes."""
    model, camera_args, maps = tiny_fusion
    stage = CameraStage(model.camera).eval()
    with torch.no_grad():
        program = torch.export.export(stage, camera_args)
        got = program.module()(*camera_args)
    assert _ops_in([program.graph_module]) == {"bev_ddp.bev_pool.default"}
    torch.testing.assert_close(got, maps[0], rtol=0, atol=0)


def test_compiled_ops_match_eager_and_keep_their_gradients():
    """torch.compile(fullgraph=True) through both ops: forward and gradients equal the eager ones."""
    from bev_ddp.ops import bev_pool, ms_deform_attn

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 3, generator=g, requires_grad=True)
    coords = torch.stack([torch.randint(-1, 9, (200,), generator=g), torch.randint(0, 8, (200,), generator=g),
                          torch.zeros(200, dtype=torch.long), torch.randint(0, 2, (200,), generator=g)], dim=1)
    value = torch.randn(1, 20, 2, 4, generator=g, requires_grad=True)
    loc = torch.rand(1, 7, 2, 1, 3, 2, generator=g, requires_grad=True)
    attn = torch.rand(1, 7, 2, 1, 3, generator=g, requires_grad=True)

    def fn(feats, value, loc, attn):
        pooled = bev_pool(feats, coords, 2, (1, 8, 8))  # [2, 3, 1, 8, 8]
        attended = ms_deform_attn(value, [(4, 5)], None, loc, attn)  # [1, 7, 8]
        return (pooled ** 2).sum() + (attended ** 2).sum()

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    inputs = (feats, value, loc, attn)
    want = torch.autograd.grad(fn(*inputs), inputs)
    got = torch.autograd.grad(compiled(*inputs), inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
