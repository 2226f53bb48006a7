"""spconv (ConvAlgo.Native, CPU, 2 threads) against dense conv3d with the same weights.

A submanifold conv equals the dense conv masked to the input's active sites; a regular sparse
conv equals the dense conv (no bias: inactive outputs are zero on both sides).  Forward values
and the gradients of inputs and weights must agree.  The whole tiny-config SparseEncoder, fed a
synthetic LiDAR sweep, equals the same layers run densely for every voxel order and index layout
it may see.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("spconv")
from bev_test_helpers import load_bev_config  # noqa: E402

from bev_ddp.bev.build import build_lidar_encoder  # noqa: E402
from bev_ddp.bev.lidar.spconv_cpu import import_spconv  # noqa: E402
from bev_ddp.bev.lidar.sparse_encoder import SparseBasicBlock, sparse_conv_bn_relu, to_dense_bev  # noqa: E402
from bev_ddp.bev.lidar.voxelize import Voxels  # noqa: E402
from bev_ddp.data.sensors import LidarSpec  # noqa: E402
from bev_ddp.data.synthetic.render import scan_lidar  # noqa: E402
from bev_ddp.data.synthetic.tiny import TINY  # noqa: E402
from bev_ddp.data.synthetic.trajectory import plan_route  # noqa: E402
from bev_ddp.data.synthetic.world import build_scene  # noqa: E402
from bev_ddp.errors import InputError  # noqa: E402

spconv = import_spconv()

SHAPE = (20, 18, 9)  # (X, Y, Z)


def _dense_weight(conv: torch.nn.Module) -> torch.Tensor:
    """spconv weight [out, kx, ky, kz, in] -> conv3d weight [out, in, kx, ky, kz]."""
    return conv.weight.permute(0, 4, 1, 2, 3)


def _random_voxels(gen: torch.Generator, batch: int, count: int, channels: int):
    flat = torch.randperm(batch * SHAPE[0] * SHAPE[1] * SHAPE[2], generator=gen)[:count]
    b, rest = flat // (SHAPE[0] * SHAPE[1] * SHAPE[2]), flat % (SHAPE[0] * SHAPE[1] * SHAPE[2])
    x, rest = rest // (SHAPE[1] * SHAPE[2]), rest % (SHAPE[1] * SHAPE[2])
    y, z = rest // SHAPE[2], rest % SHAPE[2]
    coords = torch.stack([b, x, y, z], dim=1).int()  # [M, 4] (b, x, y, z)
    feats = torch.randn(count, channels, generator=gen, dtype=torch.float64).float()
    return feats, coords


def _bn_eval(bn: torch.nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """The eval-mode BatchNorm1d applied to the channel axis of a dense [B, C, X, Y, Z] map."""
    shape = (1, -1, 1, 1, 1)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale.view(shape) + bn.bias.view(shape)


def _randomise_bn(module: torch.nn.Module, gen: torch.Generator) -> None:
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm1d):
            with torch.no_grad():
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)


def test_sparse_stack_matches_dense_conv3d_forward_and_backward():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # spconv's CPU-only wheel races here; the cu120 wheel must not
    try:
        gen = torch.Generator().manual_seed(0)
        channels = 8
        block = SparseBasicBlock(channels=channels, indice_key="subm1")
        down = sparse_conv_bn_relu(channels, 16, kernel_size=3, stride=2, padding=(1, 1, 0), indice_key="down",
                                   submanifold=False)
        _randomise_bn(block, gen)
        _randomise_bn(down, gen)
        block.eval(), down.eval()
        feats, coords = _random_voxels(gen, batch=2, count=300, channels=channels)
        out_weight = torch.randn(2, 16 * 4, 10, 9, generator=gen)

        # sparse path
        sparse_feats = feats.clone().requires_grad_(True)
        x = spconv.SparseConvTensor(sparse_feats, coords, list(SHAPE), 2)
        sparse_out = to_dense_bev(down(block(x)))  # [B, 16·Z', X', Y']
        (sparse_out * out_weight).sum().backward()

        # dense path with leaf copies of the same weights
        dense_in = torch.zeros(2, channels, *SHAPE)
        b, i, j, k = coords.long().unbind(1)
        dense_in[b, :, i, j, k] = feats
        dense_in.requires_grad_(True)
        mask = torch.zeros(2, 1, *SHAPE)
        mask[b, :, i, j, k] = 1.0
        convs = [block.conv1, block.conv2, down[0]]
        weights = [_dense_weight(c).detach().clone().requires_grad_(True) for c in convs]
        h = mask * F.relu(_bn_eval(block.bn1, F.conv3d(dense_in, weights[0], padding=1)))
        h = mask * F.relu(_bn_eval(block.bn2, F.conv3d(h, weights[1], padding=1)) + dense_in)
        d = F.conv3d(h, weights[2], stride=2, padding=(1, 1, 0))
        active = (F.conv3d(mask, torch.ones(1, 1, 3, 3, 3), stride=2, padding=(1, 1, 0)) > 0).float()
        dense_out = active * F.relu(_bn_eval(down[1], d))  # [B, 16, X', Y', Z']
        dense_out = dense_out.permute(0, 1, 4, 2, 3).flatten(1, 2)  # [B, 16·Z', X', Y'], index c·Z' + z
        assert dense_out.shape == sparse_out.shape == (2, 16 * 4, 10, 9)
        (dense_out * out_weight).sum().backward()

        assert sparse_out.abs().sum() > 0
        torch.testing.assert_close(sparse_out, dense_out, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(sparse_feats.grad, dense_in.grad[b, :, i, j, k], rtol=1e-4, atol=1e-4)
        for conv, weight in zip(convs, weights):
            torch.testing.assert_close(conv.weight.grad.permute(0, 4, 1, 2, 3), weight.grad, rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(previous)


def test_sparse_stack_is_bitwise_deterministic_with_two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(1)
        down = sparse_conv_bn_relu(4, 8, kernel_size=3, stride=2, padding=1, indice_key="down", submanifold=False)
        feats, coords = _random_voxels(gen, batch=1, count=500, channels=4)
        outs, grads = [], []
        for _ in range(3):
            f = feats.clone().requires_grad_(True)
            out = to_dense_bev(down(spconv.SparseConvTensor(f, coords, list(SHAPE), 1)))
            out.square().sum().backward()
            outs.append(out.detach())
            grads.append(f.grad)
        assert all(torch.equal(outs[0], o) for o in outs[1:])
        assert all(torch.equal(grads[0], g) for g in grads[1:])
    finally:
        torch.set_num_threads(previous)


def _synthetic_sweeps(count: int) -> list[torch.Tensor]:
    """``count`` LiDAR sweeps [N, 5] (lidar frame, m) at points 15 m apart on a route through the tiny town."""
    town, raster = build_scene(TINY)
    route = plan_route(town, np.random.default_rng(0), 15.0 * count + 1.0)
    lidar = LidarSpec()
    sweeps = []
    for k in range(count):
        x, y, yaw = route.pose(15.0 * k)
        ego2global = np.eye(4)
        ego2global[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        ego2global[:2, 3] = (x, y)
        points = scan_lidar(town, raster, ego2global @ lidar.lidar2ego(), lidar, TINY.lidar_azimuth_steps,
                            np.random.default_rng(k))
        sweeps.append(torch.from_numpy(points))
    return sweeps


def _dense_conv_bn_relu(layer, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode sparse conv → BN → ReLU on dense [B, C, X, Y, Z] maps; returns (output, active mask)."""
    conv, bn = layer[0], layer[1]
    if conv.subm:
        out = F.conv3d(h, _dense_weight(conv), padding=conv.padding)
    else:
        out = F.conv3d(h, _dense_weight(conv), stride=conv.stride, padding=conv.padding)
        ones = torch.ones(1, 1, *conv.kernel_size)
        mask = (F.conv3d(mask, ones, stride=conv.stride, padding=conv.padding) > 0).float()
    return mask * F.relu(_bn_eval(bn, out)), mask


def _dense_basic_block(block: SparseBasicBlock, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = mask * F.relu(_bn_eval(block.bn1, F.conv3d(h, _dense_weight(block.conv1), padding=1)))
    return mask * F.relu(_bn_eval(block.bn2, F.conv3d(out, _dense_weight(block.conv2), padding=1)) + h)


@torch.no_grad()
def _dense_encoder(encoder, voxels: Voxels) -> torch.Tensor:
    """The encoder's layers run densely on the voxel grid → [B, C·Z', X', Y'] (channel index c·Z' + z)."""
    h = torch.zeros(voxels.batch_size, voxels.features.shape[1], *encoder.sparse_shape)  # [B, F, X, Y, Z]
    mask = torch.zeros(voxels.batch_size, 1, *encoder.sparse_shape)
    b, i, j, k = voxels.coords.long().unbind(1)
    h[b, :, i, j, k] = voxels.features
    mask[b, :, i, j, k] = 1.0
    h, mask = _dense_conv_bn_relu(encoder.conv_input, h, mask)
    for stage in encoder.stages:
        for layer in stage:
            if isinstance(layer, SparseBasicBlock):
                h = _dense_basic_block(layer, h, mask)
            else:
                h, mask = _dense_conv_bn_relu(layer, h, mask)
    h, _ = _dense_conv_bn_relu(encoder.conv_out, h, mask)
    return h.permute(0, 1, 4, 2, 3).flatten(1, 2)  # [B, C·Z', X', Y']


@pytest.fixture(scope="module")
def tiny_encoder_and_voxels():
    """The tiny fusion config's LiDAR encoder on a ±8 m crop (32 × 32 × 17 cells) and two voxelized sweeps."""
    cfg = load_bev_config("synth_tiny_fusion_ddp.yaml", "model.lidar.point_cloud_range=[-8.0,-8.0,-5.0,8.0,8.0,3.0]",
                          "model.lidar.sparse_shape=[32,32,17]")
    lidar = build_lidar_encoder(cfg.model.lidar).eval()
    _randomise_bn(lidar, torch.Generator().manual_seed(2))
    voxels = lidar.voxelizer(_synthetic_sweeps(2))
    return lidar.sparse_encoder, voxels


@pytest.mark.parametrize("order", ["voxelizer", "row_major", "row_major_strided"])
def test_sparse_encoder_matches_dense_layers_for_any_voxel_order(tiny_encoder_and_voxels, order):
    encoder, voxels = tiny_encoder_and_voxels
    coords, feats = voxels.coords, voxels.features
    assert coords.dtype == torch.int32 and coords.is_contiguous()  # what the voxelizer emits
    c = coords.long()
    row_major = torch.argsort(((c[:, 0] * 32 + c[:, 1]) * 32 + c[:, 2]) * 17 + c[:, 3])
    assert not torch.equal(row_major, torch.arange(len(c)))  # the voxelizer's order is not row-major
    if order != "voxelizer":
        coords, feats = coords[row_major], feats[row_major]
    if order == "row_major_strided":  # the layout of mask.nonzero().int(): strides (1, M)
        coords = coords.t().contiguous().t()
        assert not coords.is_contiguous()
    sparse_in = Voxels(feats, coords, voxels.batch_size, voxels.num_points)
    with torch.no_grad():
        sparse_out = encoder(sparse_in)
    dense_out = _dense_encoder(encoder, sparse_in)
    assert sparse_out.shape == dense_out.shape == (2, encoder.out_channels, 16, 16)
    assert (dense_out.abs().sum(dim=(0, 1)) > 0).float().mean() > 0.3  # the sweep lights a good part of the map
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-4, atol=1e-4 * float(dense_out.abs().max()))


def test_sparse_encoder_rejects_int64_coords(tiny_encoder_and_voxels):
    encoder, voxels = tiny_encoder_and_voxels
    with pytest.raises(InputError, match="int32"):
        encoder(Voxels(voxels.features, voxels.coords.long(), voxels.batch_size, voxels.num_points))
