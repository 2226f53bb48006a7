"""Hard voxelization of LiDAR points with spconv's ``PointToVoxel``.

Each cloud is cut into voxels of ``voxel_size`` metres inside ``point_cloud_range`` (lidar frame);
a voxel keeps at most ``max_points_per_voxel`` points and a cloud at most ``max_voxels`` voxels
(90 000 while training, 120 000 at test time in BEVFusion).  The voxel feature is the mean of its
points (BEVFusion's ``HardSimpleVFE``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from bev_ddp.bev.lidar.spconv_cpu import import_spconv
from bev_ddp.errors import InputError

import_spconv()
from spconv.pytorch.utils import PointToVoxel  # noqa: E402


@dataclass
class Voxels:
    """Voxelized batch.

    Attributes:
        features: [M, F] mean point features per voxel.
        coords: [M, 4] int32 (b, x, y, z) voxel indices, the layout ``spconv.SparseConvTensor`` takes.
        batch_size: B.
        num_points: [B] long, points that reached the voxelizer per sample.
    """

    features: torch.Tensor
    coords: torch.Tensor
    batch_size: int
    num_points: torch.Tensor


class Voxelizer(nn.Module):
    """Hard voxelization + mean voxel features.

    Args:
        voxel_size: (x, y, z) voxel edge lengths in metres.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) in metres.
        num_point_features: F, values per point (x, y, z, intensity, time lag → 5).
        max_points_per_voxel: points kept per voxel.
        max_voxels: (training, inference) voxel budget per cloud.
    """

    def __init__(
        self,
        *,
        voxel_size: Sequence[float],
        point_cloud_range: Sequence[float],
        num_point_features: int,
        max_points_per_voxel: int,
        max_voxels: tuple[int, int],
    ):
        super().__init__()
        self.voxel_size = [float(v) for v in voxel_size]
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        self.num_point_features = num_point_features
        self.max_points_per_voxel = max_points_per_voxel
        self.max_voxels = (int(max_voxels[0]), int(max_voxels[1]))
        self._generators: dict[tuple[str, int], PointToVoxel] = {}

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Voxel cells along (x, y, z)."""
        lo, hi = self.point_cloud_range[:3], self.point_cloud_range[3:]
        return tuple(int(round((h - l) / s)) for l, h, s in zip(lo, hi, self.voxel_size))  # type: ignore[return-value]

    def _generator(self, device: torch.device) -> PointToVoxel:
        budget = self.max_voxels[0] if self.training else self.max_voxels[1]
        key = (str(device), budget)
        if key not in self._generators:
            self._generators[key] = PointToVoxel(
                vsize_xyz=self.voxel_size,
                coors_range_xyz=self.point_cloud_range,
                num_point_features=self.num_point_features,
                max_num_voxels=budget,
                max_num_points_per_voxel=self.max_points_per_voxel,
                device=device,
            )
        return self._generators[key]

    @torch.no_grad()
    def forward(self, points: Sequence[torch.Tensor]) -> Voxels:
        """points: B clouds [N_b, F] (lidar frame, metres) → :class:`Voxels`."""
        features, coords, counts = [], [], []
        for b, cloud in enumerate(points):
            if cloud.ndim != 2 or cloud.shape[1] != self.num_point_features:
                raise InputError(
                    f"points of sample {b} must have shape [N, {self.num_point_features}], got {tuple(cloud.shape)}"
                )
            if not torch.isfinite(cloud).all():
                raise InputError(f"points of sample {b} contain NaN or inf")
            counts.append(cloud.shape[0])
            if cloud.shape[0] == 0:
                continue
            voxels, zyx, num = self._generator(cloud.device)(cloud.float().contiguous())
            mean = voxels.sum(dim=1) / num.clamp(min=1).unsqueeze(1).to(voxels.dtype)  # [M_b, F]
            xyz = zyx.flip(1)  # spconv gives (z, y, x)
            batch_column = torch.full_like(xyz[:, :1], b)
            features.append(mean)
            coords.append(torch.cat([batch_column, xyz], dim=1).int())  # [M_b, 4] (b, x, y, z)
        device = points[0].device if len(points) else torch.device("cpu")
        if features:
            feats, index = torch.cat(features), torch.cat(coords)
        else:
            feats = torch.zeros(0, self.num_point_features, device=device)
            index = torch.zeros(0, 4, dtype=torch.int32, device=device)
        return Voxels(feats, index, len(points), torch.tensor(counts, dtype=torch.long))
