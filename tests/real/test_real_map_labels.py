"""The real drivable area of singapore-onenorth (devkit GeoJSON) rasterised around the real keyframe.

Oracle: shapely point-in-polygon at the cell centres, mapped to global metres by the keyframe's
own LiDAR pose from mmdet3d's info file.
"""
from __future__ import annotations

import numpy as np
import shapely

from real_frames import drivable_polygons, keyframe_lidar2global, write_drivable_map

from bev_ddp.data.bev_map import load_map, rasterize_map
from bev_ddp.data.geometry import heading_yaw


def _cell_centres():
    c = (np.arange(200) + 0.5) * 0.5 - 50.0  # lidar metres of cell centres
    x, y = np.meshgrid(c, c, indexing="ij")  # [X, Y]
    return x.ravel(), y.ravel()


def _drivable_union():
    union = shapely.union_all(drivable_polygons())
    shapely.prepare(union)  # point tests on a prepared geometry: milliseconds instead of a minute
    return union


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_centres_label_is_point_in_polygon_at_cell_centres(tmp_path):
    pose = keyframe_lidar2global()
    write_drivable_map(tmp_path)
    label = rasterize_map(load_map(tmp_path, "singapore-onenorth"), pose, classes=("drivable_area",))[0]  # [X, Y]
    union = _drivable_union()
    x, y = _cell_centres()
    # the oracle: cell centres through the full 3-D pose onto the map plane
    world = pose @ np.stack([x, y, np.zeros_like(x), np.ones_like(x)])
    oracle = shapely.contains_xy(union, world[0], world[1]).reshape(200, 200)
    assert 0.15 < oracle.mean() < 0.20  # the README's 17 %
    assert _iou(label, oracle) >= 0.995
    # the label convention (DESIGN): centre at the LiDAR, turned by the yaw of its x axis: exact
    yaw = heading_yaw(pose)
    planar = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]) @ np.stack([x, y])
    planar_oracle = shapely.contains_xy(union, planar[0] + pose[0, 3], planar[1] + pose[1, 3]).reshape(200, 200)
    np.testing.assert_array_equal(label, planar_oracle)


def test_centres_label_follows_rotation_and_scale_on_the_real_map(tmp_path):
    pose = keyframe_lidar2global()
    write_drivable_map(tmp_path)
    theta, scale = np.radians(23.0), 1.1
    aug = np.eye(4)
    aug[:2, :2] = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    aug[:2, 3] = (2.0, -3.0)
    label = rasterize_map(load_map(tmp_path, "singapore-onenorth"), pose, classes=("drivable_area",),
                          lidar_aug=aug)[0]
    x, y = _cell_centres()  # augmented-frame centres → lidar → planar world
    lidar = np.linalg.inv(aug[:2, :2]) @ (np.stack([x, y]) - aug[:2, 3:4])
    yaw = heading_yaw(pose)
    world = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]) @ lidar + pose[:2, 3:4]
    oracle = shapely.contains_xy(_drivable_union(), world[0], world[1]).reshape(200, 200)
    assert _iou(label, oracle) >= 0.999
