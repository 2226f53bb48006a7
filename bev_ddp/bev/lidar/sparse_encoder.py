"""BEVFusion's SparseEncoder: sparse 3-D convolutions from voxels to a dense BEV map.

``conv_input`` (SubM 3×3×3) → stages of SubM basic blocks, each stage but the last ending in a
stride-2 sparse conv → ``conv_out`` (kernel (1, 1, 3), stride (1, 1, 2)) → dense
``[B, C, X, Y, Z]`` → z folded into channels → ``[B, C·Z, X, Y]``.

Full config: sparse shape (x, y, z) = (1024, 1024, 41), channels 16 → 32 → 64 → 128, z paddings
(1, 1, 0) on the last down conv, output 128 × 2 z cells = 256 channels at 128 × 128.

Every conv uses ``ConvAlgo.Native`` (gather-GEMM-scatter): the only spconv algorithm with CPU
kernels.  BatchNorm is eps 1e-3, momentum 0.01 as in BEVFusion.

Voxel coordinates reach spconv as a contiguous int32 ``[M, 4]`` tensor.  spconv 2.3.6 reads the
index buffer as row-major whatever its strides, so a strided view (e.g. ``mask.nonzero().int()``,
which PyTorch 2.14 returns with strides (1, M)) gives wrong sites and values in every conv,
submanifold and regular, with no error; int64 indices fail an assertion inside spconv.  The order
of the voxels does not matter: shuffled, row-major sorted and the voxelizer's own order (first
point seen first, unsorted) all equal the dense reference (tests/bev/lidar/test_sparse_vs_dense.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from bev_ddp.bev.lidar.spconv_cpu import import_spconv, patch_spconv_stream_for_cpu

spconv = import_spconv()
ConvAlgo = spconv.ConvAlgo
from bev_ddp.bev.lidar.voxelize import Voxels
from bev_ddp.errors import InputError

patch_spconv_stream_for_cpu()

ALGO = ConvAlgo.Native


def _triple(value: Any) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    values = tuple(int(v) for v in value)
    if len(values) != 3:
        raise InputError(f"expected an int or three ints, got {value!r}")
    return values  # type: ignore[return-value]


def sparse_conv_bn_relu(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: Any = 3,
    stride: Any = 1,
    padding: Any = 0,
    indice_key: str,
    submanifold: bool,
) -> spconv.SparseSequential:
    """Sparse conv (submanifold or regular) → BatchNorm1d → ReLU, no conv bias."""
    if submanifold:
        conv = spconv.SubMConv3d(
            in_channels, out_channels, kernel_size, padding=padding, bias=False, indice_key=indice_key, algo=ALGO
        )
    else:
        conv = spconv.SparseConv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=_triple(padding),
            bias=False,
            indice_key=indice_key,
            algo=ALGO,
        )
    return spconv.SparseSequential(conv, nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True))


class SparseBasicBlock(spconv.SparseModule):
    """Residual block of two submanifold 3×3×3 convs sharing one index set."""

    def __init__(self, *, channels: int, indice_key: str):
        super().__init__()
        self.conv1 = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key, algo=ALGO)
        self.bn1 = nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)
        self.conv2 = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key, algo=ALGO)
        self.bn2 = nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)
        self.relu = nn.ReLU()

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        identity = x.features
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        out = out.replace_feature(self.relu(self.bn2(out.features) + identity))
        return out


class SparseEncoder(nn.Module):
    """Voxels → dense BEV features.

    Args:
        in_channels: voxel feature size F.
        sparse_shape: (X, Y, Z) voxel grid the sparse tensor lives on.
        base_channels: channels of ``conv_input``.
        encoder_channels: per stage, the output channels of its blocks; the last entry of every
            stage but the last is a stride-2 sparse conv.
        encoder_paddings: per stage and block, the padding of that block's down conv (int or
            (x, y, z)); entries for basic blocks are ignored.
        output_channels: channels of ``conv_out`` (before z is folded into channels).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        sparse_shape: Sequence[int],
        base_channels: int,
        encoder_channels: Sequence[Sequence[int]],
        encoder_paddings: Sequence[Sequence[Any]],
        output_channels: int,
    ):
        super().__init__()
        self.sparse_shape = [int(v) for v in sparse_shape]  # (X, Y, Z)
        if len(encoder_channels) != len(encoder_paddings):
            raise InputError("encoder_channels and encoder_paddings need one entry per stage")
        self.conv_input = sparse_conv_bn_relu(
            in_channels, base_channels, kernel_size=3, padding=1, indice_key="subm1", submanifold=True
        )
        stages = []
        channels = base_channels
        shape = list(self.sparse_shape)
        for i, (blocks, paddings) in enumerate(zip(encoder_channels, encoder_paddings)):
            layers: list[nn.Module] = []
            for j, out_channels in enumerate(blocks):
                if j == len(blocks) - 1 and i != len(encoder_channels) - 1:
                    pad = _triple(paddings[j])
                    layers.append(
                        sparse_conv_bn_relu(
                            channels,
                            out_channels,
                            kernel_size=3,
                            stride=2,
                            padding=pad,
                            indice_key=f"spconv{i + 2}",
                            submanifold=False,
                        )
                    )
                    shape = [(s + 2 * p - 3) // 2 + 1 for s, p in zip(shape, pad)]
                else:
                    if out_channels != channels:
                        raise InputError(f"stage {i} block {j}: a basic block keeps channels ({channels} != {out_channels})")
                    layers.append(SparseBasicBlock(channels=channels, indice_key=f"subm{i + 1}"))
                channels = out_channels
            stages.append(spconv.SparseSequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.conv_out = sparse_conv_bn_relu(
            channels,
            output_channels,
            kernel_size=(1, 1, 3),
            stride=(1, 1, 2),
            padding=0,
            indice_key="spconv_down2",
            submanifold=False,
        )
        out_z = (shape[2] - 3) // 2 + 1
        if out_z < 1:
            raise InputError(f"sparse_shape {self.sparse_shape} is too thin in z for the encoder's down convs")
        self.output_size = (shape[0], shape[1])  # (X, Y) of the dense output
        self.out_channels = output_channels * out_z

    def forward(self, voxels: Voxels) -> torch.Tensor:
        """:class:`Voxels` (coords (b, x, y, z)) → dense BEV [B, out_channels, X', Y']."""
        if voxels.coords.shape[0] == 0:  # no point in the whole batch: an empty map
            return voxels.features.new_zeros(voxels.batch_size, self.out_channels, *self.output_size)
        if voxels.coords.dtype != torch.int32:
            raise InputError(f"voxel coords must be int32 (spconv's index type), got {voxels.coords.dtype}")
        coords = voxels.coords.contiguous()  # spconv ignores strides: a strided view reads wrong sites
        x = spconv.SparseConvTensor(voxels.features, coords, self.sparse_shape, voxels.batch_size)
        x = self.conv_input(x)
        for stage in self.stages:
            x = stage(x)
        x = self.conv_out(x)
        return to_dense_bev(x)


def to_dense_bev(x: spconv.SparseConvTensor) -> torch.Tensor:
    """Sparse tensor on an (X, Y, Z) grid → dense [B, C·Z, X, Y] (channel index c·Z + z).

    Scatters by index directly instead of ``SparseConvTensor.dense`` (whose list indexing is
    deprecated in recent PyTorch); duplicate sites cannot occur in a spconv output.
    """
    size_x, size_y, size_z = (int(v) for v in x.spatial_shape)
    channels = x.features.shape[1]
    dense = x.features.new_zeros(x.batch_size, size_x, size_y, size_z, channels)  # [B, X, Y, Z, C]
    b, i, j, k = x.indices.long().unbind(1)
    dense = dense.index_put((b, i, j, k), x.features)
    dense = dense.permute(0, 4, 3, 1, 2)  # [B, C, Z, X, Y]
    return dense.reshape(x.batch_size, channels * size_z, size_x, size_y)  # [B, C·Z, X, Y]
