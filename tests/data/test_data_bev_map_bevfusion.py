"""``map_raster: bevfusion`` against a direct devkit ``get_map_mask`` call made as BEVFusion's loader makes it."""
from __future__ import annotations

import math

import numpy as np
import pytest
from nuscenes.map_expansion.map_api import NuScenesMap, NuScenesMapExplorer

from bev_ddp.data.bev_map import MAP_CLASSES, rasterize_map
from bev_ddp.data.infos import read_infos


class _Shapely2Explorer(NuScenesMapExplorer):
    """The devkit explorer with only the shapely >= 2 fix: a MultiLineString is iterated by ``.geoms``."""

    @staticmethod
    def mask_for_lines(lines, mask):
        for line in (lines.geoms if lines.geom_type == "MultiLineString" else [lines]):
            NuScenesMapExplorer.mask_for_lines(line, mask)
        return mask


def _their_labels(nusc_map: NuScenesMap, lidar2global: np.ndarray, lidar_aug: np.ndarray) -> np.ndarray:
    """BEVFusion's LoadBEVSegmentation, written out: patch at the augmented lidar origin, angle of
    its x axis, 100 m x 100 m on a 200 x 200 canvas, masks transposed to [X, Y]."""
    pose = lidar2global @ np.linalg.inv(lidar_aug)
    v = pose[:3, :3] @ np.array([1.0, 0.0, 0.0])
    layers = ["drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "road_divider", "lane_divider"]
    masks = nusc_map.explorer.get_map_mask((pose[0, 3], pose[1, 3], 100.0, 100.0), np.arctan2(v[1], v[0]) / np.pi * 180,
                                           layers, (200, 200)).transpose(0, 2, 1).astype(bool)
    by = dict(zip(layers, masks))
    return np.stack([by[c] for c in MAP_CLASSES[:5]] + [by["road_divider"] | by["lane_divider"]])


def _aug(theta_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(math.radians(theta_deg)), math.sin(math.radians(theta_deg))
    out = np.eye(4)
    out[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    out[:2, 3] = shift
    return out


@pytest.fixture(scope="module")
def maps(world):
    from bev_ddp.data.bev_map import load_map

    oracle = NuScenesMap(dataroot=str(world), map_name="singapore-onenorth")
    oracle.explorer = _Shapely2Explorer(oracle)
    return load_map(world, "singapore-onenorth"), oracle


def test_bevfusion_mode_agrees_with_their_loader_on_rotated_and_shifted_poses(maps, infos):
    ours_map, oracle = maps
    rng = np.random.default_rng(0)
    agree = {c: [] for c in MAP_CLASSES}
    centres_vs_theirs = []
    for info in read_infos(infos["train"])[1][:3]:
        lidar2global = np.asarray(info["ego2global"]) @ np.asarray(info["lidar2ego"])
        for _ in range(3):
            aug = _aug(rng.uniform(-45, 45), rng.uniform(0.9, 1.1), tuple(rng.normal(0, 3, 2)))
            ours = rasterize_map(ours_map, lidar2global, lidar_aug=aug, mode="bevfusion")
            theirs = _their_labels(oracle, lidar2global, aug)
            for k, c in enumerate(MAP_CLASSES):
                agree[c].append((ours[k] == theirs[k]).mean())
            centres_vs_theirs.append((rasterize_map(ours_map, lidar2global, lidar_aug=aug) != theirs).mean())
    for c, values in agree.items():
        assert np.mean(values) >= 0.999, (c, np.mean(values))
    # the two conventions really differ (half a cell, line drawing, scale), so the mode matters
    assert np.mean(centres_vs_theirs) > 0.001
