"""Deformable attention module: sampling conventions and the op it dispatches to."""
from __future__ import annotations

import pytest
import torch

import bev_ddp.nn.deformable_attention as da
from bev_ddp.errors import InputError
from bev_ddp.nn import MultiScaleDeformableAttention
from bev_ddp.nn.map_decoder import pixel_centres
from bev_ddp.ops import ms_deform_attn_reference


def identity_attention(offset_xy=(0.0, 0.0)) -> MultiScaleDeformableAttention:
    """One head, one point, identity projections, constant offset in pixels."""
    attn = MultiScaleDeformableAttention(embed_dims=4, num_heads=1, num_levels=1, num_points=1)
    with torch.no_grad():
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.copy_(torch.tensor(offset_xy))
    return attn


def run(attn, value_map):
    b, c, h, w = value_map.shape
    value = value_map.flatten(2).transpose(1, 2)  # [B, H*W, C]
    ref = pixel_centres(h, w, "cpu")[None, :, None, :].expand(b, -1, 1, -1)  # [B, H*W, 1, 2]
    shapes = torch.tensor([[h, w]])
    out = attn(value, value, ref, shapes, torch.zeros(1, dtype=torch.long))
    return out.transpose(1, 2).reshape(b, c, h, w)


def test_zero_offset_samples_the_reference_pixel():
    value = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(run(identity_attention(), value), value)


def test_offsets_are_in_pixels_x_then_y():
    value = torch.randn(1, 4, 3, 5)
    shifted_x = run(identity_attention((1.0, 0.0)), value)
    torch.testing.assert_close(shifted_x[..., :-1], value[..., 1:])
    torch.testing.assert_close(shifted_x[..., -1], torch.zeros_like(value[..., -1]))  # outside -> zero padding
    shifted_y = run(identity_attention((0.0, -1.0)), value)
    torch.testing.assert_close(shifted_y[..., 1:, :], value[..., :-1, :])


def test_dispatches_to_ops_ms_deform_attn(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args[0].shape)
        return ms_deform_attn_reference(*args)

    monkeypatch.setattr(da, "ms_deform_attn", spy)
    attn = MultiScaleDeformableAttention(embed_dims=8, num_heads=2, num_levels=1, num_points=3)
    run(attn, torch.randn(1, 8, 2, 3))
    assert calls == [torch.Size([1, 6, 2, 4])]


def test_init_spreads_heads_and_points():
    attn = MultiScaleDeformableAttention(embed_dims=16, num_heads=4, num_levels=1, num_points=2)
    bias = attn.sampling_offsets.bias.view(4, 1, 2, 2)
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0]]))  # head 0 looks right
    torch.testing.assert_close(bias[1, 0, :, 1], torch.tensor([1.0, 2.0]))  # head 1 looks down


def test_bad_shapes():
    attn = MultiScaleDeformableAttention(embed_dims=8, num_heads=2)
    q = torch.randn(1, 6, 8)
    shapes, start = torch.tensor([[2, 3]]), torch.zeros(1, dtype=torch.long)
    with pytest.raises(InputError, match="reference_points"):
        attn(q, q, torch.rand(1, 6, 2), shapes, start)
    with pytest.raises(InputError, match="value"):
        attn(q, torch.randn(1, 6, 4), torch.rand(1, 6, 1, 2), shapes, start)
    with pytest.raises(InputError, match="divisible"):
        MultiScaleDeformableAttention(embed_dims=10, num_heads=4)
