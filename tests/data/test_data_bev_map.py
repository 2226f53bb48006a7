"""Map rasterisation: orientation, shapely-2 geometry, labels that follow BEV augmentation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bev_ddp.data.bev_map import MAP_CLASSES, MapExplorer, load_map, rasterize_map
from bev_ddp.data.infos import read_infos
from bev_ddp.errors import InputError


def _lidar2global(info):
    return np.asarray(info["ego2global"]) @ np.asarray(info["lidar2ego"])


@pytest.fixture(scope="module")
def nusc_map(world):
    return load_map(world, "singapore-onenorth")


@pytest.fixture(scope="module")
def info(infos):
    return read_infos(infos["train"])[1][1]


def _aug(theta_deg=0.0, scale=1.0, shift=(0.0, 0.0), flip_x=False, flip_y=False):
    c, s = math.cos(math.radians(theta_deg)), math.sin(math.radians(theta_deg))
    out = np.eye(4)
    out[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    out[:2, 3] = shift
    return np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0, 1.0]) @ out


def test_rasterize_shape_orientation_and_ego_on_road(nusc_map, info):
    masks = rasterize_map(nusc_map, _lidar2global(info))
    assert masks.shape == (len(MAP_CLASSES), 200, 200) and masks.dtype == bool
    assert masks[0, 98:102, 98:102].all()  # the ego drives on the drivable area
    assert all(masks[c].any() for c in range(len(MAP_CLASSES)) if MAP_CLASSES[c] != "carpark_area")
    # the lidar y axis points forward along the road: the drivable area extends farther along y than x
    drivable = masks[0]
    assert drivable[100, 100:].sum() + drivable[100, :100].sum() > drivable[100:, 100].sum() + drivable[:100, 100].sum()


def test_exact_flips_and_quarter_turns_match_array_ops(nusc_map, info):
    pose = _lidar2global(info)
    base = rasterize_map(nusc_map, pose)
    np.testing.assert_array_equal(rasterize_map(nusc_map, pose, lidar_aug=_aug(flip_y=True)), base[:, :, ::-1])
    np.testing.assert_array_equal(rasterize_map(nusc_map, pose, lidar_aug=_aug(flip_x=True)), base[:, ::-1, :])
    # +90° about z: augmented (x', y') = (-y, x)  →  out[i, j] = base[j, 199 - i]
    turned = rasterize_map(nusc_map, pose, lidar_aug=_aug(90.0))
    expected = np.rot90(base, k=1, axes=(1, 2))
    assert (turned == expected).mean() > 0.995


def test_scale_and_shift_follow_the_points(nusc_map, info):
    pose = _lidar2global(info)
    base = rasterize_map(nusc_map, pose)
    aug = _aug(theta_deg=17.0, scale=1.3, shift=(3.0, -2.0))
    augmented = rasterize_map(nusc_map, pose, lidar_aug=aug)
    # every augmented cell centre q maps back to p = A⁻¹ q; its label must be base's label at p
    idx = (np.arange(200) + 0.5) * 0.5 - 50.0
    qx, qy = np.meshgrid(idx, idx, indexing="ij")
    q = np.stack([qx.ravel(), qy.ravel(), np.zeros(qx.size), np.ones(qx.size)])
    p = np.linalg.inv(aug) @ q
    i, j = np.floor((p[0] + 50) / 0.5).astype(int), np.floor((p[1] + 50) / 0.5).astype(int)
    ok = (i >= 0) & (i < 200) & (j >= 0) & (j < 200)
    agree = (augmented.reshape(6, -1)[:, ok] == base[:, i[ok], j[ok]]).mean()
    assert agree > 0.97
    # the same check against the un-augmented labels fails: the test can tell a wrong warp
    assert (base.reshape(6, -1)[:, ok] == base[:, i[ok], j[ok]]).mean() < agree - 0.02


def test_multipart_geometry_is_drawn(nusc_map):
    from shapely.geometry import LineString, MultiLineString, MultiPolygon, GeometryCollection, box

    mask = np.zeros((20, 20), np.uint8)
    MapExplorer.mask_for_lines(MultiLineString([[(2, 2), (2, 15)], [(10, 3), (18, 3)]]), mask)
    assert mask[8, 2] and mask[3, 14] and mask.sum() > 20
    mask = np.zeros((20, 20), np.uint8)
    geom = GeometryCollection([box(0, 0, 5, 5), LineString([(8, 8), (9, 9)]), MultiPolygon([box(10, 10, 14, 14)])])
    MapExplorer.mask_for_polygons(geom, mask)
    assert mask[2, 2] and mask[12, 12] and not mask[8, 8]


def test_unknown_location_and_malformed_map_name_the_file(world, tmp_path):
    with pytest.raises(InputError, match="atlantis"):
        load_map(world, "atlantis")
    with pytest.raises(InputError, match="boston-seaport.json"):
        load_map(world, "boston-seaport")  # a real location without a map file here
    (tmp_path / "maps" / "expansion").mkdir(parents=True)
    bad = tmp_path / "maps" / "expansion" / "singapore-onenorth.json"
    bad.write_text('{"version": "1.3", "canvas_edge": [1, 1], "node": [')
    with pytest.raises(InputError, match="singapore-onenorth.json"):
        load_map(tmp_path, "singapore-onenorth")
    bad.write_text(json.dumps({"version": "1.3", "canvas_edge": [1, 1]}))
    with pytest.raises(InputError, match="singapore-onenorth.json"):
        load_map(tmp_path, "singapore-onenorth")


def test_spatial_index_gives_the_devkit_scan_result(world, infos):
    indexed = load_map(world, "singapore-onenorth")
    scanned = load_map(world, "singapore-onenorth")
    scanned.explorer = MapExplorer(scanned, use_index=False)
    for info in read_infos(infos["val"])[1]:
        pose = _lidar2global(info)
        aug = _aug(theta_deg=33.0, scale=0.8, shift=(4.0, 1.0), flip_y=True)
        a = rasterize_map(indexed, pose, lidar_aug=aug)
        np.testing.assert_array_equal(a, rasterize_map(scanned, pose, lidar_aug=aug))
        assert a.any()


def test_centres_labels_equal_shapely_at_every_cell_centre(nusc_map, info):
    """Every class against shapely: polygon classes cover the cell centres inside (boundary
    included, to 1e-6 cells), dividers the centres within one cell (0.5 m) of a divider line."""
    import shapely

    from bev_ddp.data.bev_map import CLASS_LAYERS, LINE_HALF_WIDTH_CELLS
    from bev_ddp.data.geometry import heading_yaw

    pose = _lidar2global(info)
    masks = rasterize_map(nusc_map, pose)
    c = (np.arange(200) + 0.5) * 0.5 - 50.0
    x, y = np.meshgrid(c, c, indexing="ij")  # [X, Y] lidar metres
    yaw = heading_yaw(pose)
    world = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]) @ np.stack([x.ravel(), y.ravel()])
    points = shapely.points(world[0] + pose[0, 3], world[1] + pose[1, 3])
    explorer = nusc_map.explorer
    for k, name in enumerate(MAP_CLASSES):
        geoms = [g for layer in CLASS_LAYERS[name] for g in explorer._layer_geometry(layer)[0]]
        if not geoms:
            assert not masks[k].any(), name
            continue
        union = shapely.union_all(geoms)
        shapely.prepare(union)
        reach = LINE_HALF_WIDTH_CELLS * 0.5 if name == "divider" else 0.0
        expected = (shapely.distance(union, points) <= reach + 1e-6 * 0.5).reshape(200, 200)
        np.testing.assert_array_equal(masks[k], expected, err_msg=name)
