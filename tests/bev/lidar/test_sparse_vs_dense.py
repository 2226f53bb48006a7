"""spconv (ConvAlgo.Native, CPU, 2 threads) against dense conv3d with the same weights.

A submanifold conv equals the dense conv masked to the input's active sites; a regular sparse
conv equals the dense conv (no bias: inactive outputs are zero on both sides).  Forward values
and the gradients of inputs and weights must agree.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("spconv")
from bev_ddp.bev.lidar.spconv_cpu import import_spconv  # noqa: E402
from bev_ddp.bev.lidar.sparse_encoder import SparseBasicBlock, sparse_conv_bn_relu, to_dense_bev  # noqa: E402

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
