"""The CPU stream patch of spconv and the voxelizer."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("spconv")
from bev_ddp.bev.lidar.spconv_cpu import import_spconv, patch_spconv_stream_for_cpu  # noqa: E402
from bev_ddp.bev.lidar.voxelize import Voxelizer  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="the patch only applies without CUDA")
def test_stream_patch_makes_spconv_stream_queries_cpu_safe():
    import_spconv()
    import spconv.pytorch.cppcore as cppcore
    import spconv.pytorch.ops as ops

    assert patch_spconv_stream_for_cpu() is True
    assert cppcore.get_current_stream() == 0 and ops.get_current_stream() == 0
    with pytest.raises(Exception):
        torch.cuda.current_stream()  # what spconv would have called


def test_voxelizer_means_points_and_orders_coords_bxyz():
    vox = Voxelizer(voxel_size=[1.0, 1.0, 1.0], point_cloud_range=[0, 0, 0, 4, 4, 2], num_point_features=5,
                    max_points_per_voxel=10, max_voxels=(100, 100)).eval()
    points = torch.tensor([
        [0.2, 3.5, 1.5, 1.0, 0.0],
        [0.8, 3.1, 1.2, 3.0, 0.0],  # same voxel (0, 3, 1): mean
        [2.5, 0.5, 0.5, 5.0, 0.1],  # voxel (2, 0, 0)
        [9.0, 0.5, 0.5, 5.0, 0.1],  # outside: dropped
    ])
    out = vox([points, points[2:3]])
    assert out.batch_size == 2 and out.num_points.tolist() == [4, 1]
    rows = {tuple(c.tolist()): f for c, f in zip(out.coords, out.features)}
    assert set(rows) == {(0, 0, 3, 1), (0, 2, 0, 0), (1, 2, 0, 0)}
    torch.testing.assert_close(rows[(0, 0, 3, 1)], torch.tensor([0.5, 3.3, 1.35, 2.0, 0.0]))
    assert vox.grid_size == (4, 4, 2)
