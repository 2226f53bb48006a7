"""Our info records as mmdet3d 1.x info files (no mmdet3d needed: the loaders' formulas are restated)."""
from __future__ import annotations

import pickle

import numpy as np

from bev_ddp.data.geometry import transform_matrix
from bev_ddp.data.mmdet3d_infos import to_mmdet3d_infos, write_mmdet3d_infos


def _info() -> dict:
    sensor2lidar = transform_matrix([0.4, -1.2, 0.1], [np.cos(0.2), 0.0, 0.0, np.sin(0.2)])
    camera2lidar = transform_matrix([0.1, 0.8, -0.3], [0.5, -0.5, 0.5, -0.5])
    return {
        "token": "t0", "scene_name": "s", "timestamp": 1533155200450000, "location": "singapore-onenorth",
        "lidar_path": "samples/LIDAR_TOP/a.pcd.bin", "lidar2ego": np.eye(4).tolist(),
        "ego2global": transform_matrix([300.0, 200.0, 0.0], [1, 0, 0, 0]).tolist(),
        "sweeps": [{"path": "sweeps/LIDAR_TOP/b.pcd.bin", "timestamp": 1533155200400000, "time_lag": 0.05,
                    "sensor2lidar": sensor2lidar.tolist()}],
        "cams": {"CAM_FRONT": {"path": "samples/CAM_FRONT/c.jpg", "timestamp": 1533155200440000, "width": 176,
                               "height": 96, "intrinsics": [[100.0, 0, 88], [0, 100.0, 48], [0, 0, 1]],
                               "camera2ego": camera2lidar.tolist(), "camera2lidar": camera2lidar.tolist(),
                               "ego2global": np.eye(4).tolist()}},
    }


def test_records_carry_mmdet3ds_keys_units_and_transforms():
    info = _info()
    doc = to_mmdet3d_infos({"version": "v1.0-mini"}, [info])
    assert doc["metainfo"]["info_version"] == "1.1" and doc["metainfo"]["version"] == "v1.0-mini"
    (record,) = doc["data_list"]
    assert record["timestamp"] == 1533155200.45 and record["location"] == "singapore-onenorth"
    assert record["lidar_points"] == {"num_pts_feats": 5, "lidar_path": "a.pcd.bin", "lidar2ego": info["lidar2ego"]}
    cam = record["images"]["CAM_FRONT"]
    np.testing.assert_allclose(np.asarray(cam["lidar2cam"]) @ np.asarray(info["cams"]["CAM_FRONT"]["camera2lidar"]),
                               np.eye(4), atol=1e-12)
    assert cam["img_path"] == "samples/CAM_FRONT/c.jpg" and cam["cam2img"] == info["cams"]["CAM_FRONT"]["intrinsics"]
    # mmdet3d's LoadPointsFromMultiSweeps: p @ lidar2sensor[:3, :3] - lidar2sensor[:3, 3], lag = ts - sweep ts
    (sweep,) = record["lidar_sweeps"]
    points = np.random.default_rng(0).uniform(-20, 20, (50, 3))
    m = np.asarray(sweep["lidar_points"]["lidar2sensor"])
    s2l = np.asarray(info["sweeps"][0]["sensor2lidar"])
    np.testing.assert_allclose(points @ m[:3, :3] - m[:3, 3], points @ s2l[:3, :3].T + s2l[:3, 3], atol=1e-9)
    assert abs(record["timestamp"] - sweep["timestamp"] - 0.05) < 1e-6  # s
    assert sweep["lidar_points"]["lidar_path"] == "b.pcd.bin"


def test_written_file_is_a_plain_pickle(tmp_path):
    path = write_mmdet3d_infos(tmp_path / "x.pkl", {"version": "v1.0-mini"}, [_info(), _info()])
    with open(path, "rb") as f:
        doc = pickle.load(f)
    assert [r["sample_idx"] for r in doc["data_list"]] == [0, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["x.pkl"]  # no temporary file left
