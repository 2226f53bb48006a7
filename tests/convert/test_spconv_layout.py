"""A spconv-1.x-layout weight, converted, gives spconv 1.x's dense-conv3d semantics in our spconv 2.x convs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bev_ddp.convert.spconv import spconv1_dense_weight, spconv1_to_spconv2


def _dense(x, batch: int, shape) -> torch.Tensor:
    """SparseConvTensor -> [B, C, X, Y, Z] (spconv's own ``dense()`` indexes with a list, which
    recent torch reads differently)."""
    out = torch.zeros(batch, *shape, x.features.shape[1])
    b, i, j, k = x.indices.long().unbind(1)
    out[b, i, j, k] = x.features
    return out.permute(0, 4, 1, 2, 3)


@pytest.mark.parametrize("submanifold", [False, True])
def test_converted_weight_matches_dense_conv3d(submanifold):
    from bev_ddp.bev.lidar.sparse_encoder import spconv, ALGO

    gen = torch.Generator().manual_seed(0)
    shape, cin, cout, kernel = (9, 7, 5), 3, 4, (3, 3, 3)
    # random sparse input on the (x, y, z) grid our voxel coordinates use, batch of 2
    dense = torch.zeros(2, cin, *shape)
    active = torch.rand(2, *shape, generator=gen) < 0.25
    dense.permute(0, 2, 3, 4, 1)[active] = torch.randn(int(active.sum()), cin, generator=gen)
    # [N, 4] (b, x, y, z); nonzero() returns strides (1, N), which spconv would misread as row-major
    idx = active.nonzero().int().contiguous()
    feats = dense.permute(0, 2, 3, 4, 1)[active]
    # voxels in no particular order, as a voxelizer emits them
    order = torch.randperm(idx.shape[0], generator=gen)
    idx, feats = idx[order], feats[order]
    w1 = torch.randn(*kernel, cin, cout, generator=gen, dtype=torch.float64).float()  # spconv 1.x layout
    if submanifold:
        conv = spconv.SubMConv3d(cin, cout, kernel, padding=1, bias=False, indice_key="t", algo=ALGO)
    else:
        conv = spconv.SparseConv3d(cin, cout, kernel, stride=2, padding=1, bias=False, algo=ALGO)
    with torch.no_grad():
        conv.weight.copy_(spconv1_to_spconv2(w1))
    result = conv(spconv.SparseConvTensor(feats, idx, list(shape), 2))
    out = _dense(result, 2, result.spatial_shape)  # [B, Cout, X', Y', Z']
    expected = F.conv3d(dense, spconv1_dense_weight(w1), stride=1 if submanifold else 2, padding=1)
    if submanifold:  # a submanifold conv only writes the active input sites
        expected = expected * active[:, None]
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    # a layout that swaps two kernel axes would not match
    wrong = w1.transpose(0, 1).contiguous()
    with torch.no_grad():
        conv.weight.copy_(spconv1_to_spconv2(wrong))
    out_wrong = _dense(conv(spconv.SparseConvTensor(feats, idx, list(shape), 2)), 2, result.spatial_shape)
    assert not torch.allclose(out_wrong, expected, atol=1e-3)
