"""Bad data files (LiDAR values, images) are named with their field, or flagged in the report."""
from __future__ import annotations

import numpy as np
import pytest

from bev_ddp.errors import InputError


def test_a_lidar_intensity_beyond_float_sums_names_the_file_and_the_field(tmp_path):
    from bev_ddp.data.lidar_io import load_points

    points = np.zeros((20, 5), np.float32)
    points[3, 3] = 3e38  # finite in float32, inf once summed in a voxel
    path = tmp_path / "huge.pcd.bin"
    points.astype("<f4").tofile(path)
    with pytest.raises(InputError, match=rf"^LiDAR file {path} holds 1 point\(s\) whose intensity is NaN, inf or beyond"):
        load_points(path)
