"""Sparse-conv weight layouts: BEVFusion's bundled spconv 1.x vs spconv 2.x (ours).

spconv 1.x stores a 3-D sparse conv weight as ``[k0, k1, k2, C_in, C_out]`` and spconv 2.x (native
algorithm) as ``[C_out, k0, k1, k2, C_in]``; kernel axis ``i`` runs along axis ``i`` of the sparse
shape in both.  BEVFusion's sparse shape is ``[1024, 1024, 41]`` = (x, y, z), the same axis order
as our voxel coordinates (``bev_ddp.bev.lidar``), so no kernel axis is swapped: the transform is a
pure permutation.  Semantics (spconv's own tests): on a dense grid a spconv 1.x conv equals
``torch.nn.functional.conv3d`` with weight ``w.permute(4, 3, 0, 1, 2)`` ([C_out, C_in, k0, k1, k2]).
"""
from __future__ import annotations

import torch


def spconv1_to_spconv2(weight: torch.Tensor) -> torch.Tensor:
    """``[k0, k1, k2, C_in, C_out]`` → ``[C_out, k0, k1, k2, C_in]`` (contiguous copy)."""
    if weight.dim() != 5:
        raise ValueError(f"spconv weight must be 5-D, got shape {tuple(weight.shape)}")
    return weight.permute(4, 0, 1, 2, 3).contiguous()


def spconv1_dense_weight(weight: torch.Tensor) -> torch.Tensor:
    """spconv 1.x weight → the ``conv3d`` weight ``[C_out, C_in, k0, k1, k2]`` it equals on a dense grid."""
    return weight.permute(4, 3, 0, 1, 2).contiguous()
