"""LiDAR file reading: round trip and bad files."""
from __future__ import annotations

import numpy as np
import pytest

from bev_ddp.data.lidar_io import load_points, write_points
from bev_ddp.errors import InputError


def test_round_trip_and_bad_files(tmp_path):
    points = np.arange(20, dtype=np.float32).reshape(4, 5)
    write_points(tmp_path / "a.pcd.bin", points)
    np.testing.assert_array_equal(load_points(tmp_path / "a.pcd.bin"), points)
    (tmp_path / "short.pcd.bin").write_bytes((tmp_path / "a.pcd.bin").read_bytes()[:-4])
    with pytest.raises(InputError, match="short.pcd.bin"):
        load_points(tmp_path / "short.pcd.bin")
    points[1, 2] = np.nan
    write_points(tmp_path / "nan.pcd.bin", points)
    with pytest.raises(InputError, match="nan.pcd.bin"):
        load_points(tmp_path / "nan.pcd.bin")
    with pytest.raises(InputError, match="gone.pcd.bin"):
        load_points(tmp_path / "gone.pcd.bin")
    assert load_points(tmp_path / "a.pcd.bin", dims=4).shape == (5, 4)  # 80 bytes are also 5 × 4 floats
    with pytest.raises(ValueError):
        write_points(tmp_path / "b.pcd.bin", np.zeros((3, 4)))
