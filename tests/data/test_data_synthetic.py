"""The synthetic world: devkit loads it, cameras and LiDAR see the map geometry, determinism."""
from __future__ import annotations

import filecmp
import json

import numpy as np
from nuscenes.nuscenes import NuScenes
from PIL import Image

from bev_ddp.data.bev_map import load_map
from bev_ddp.data.geometry import record_to_matrix
from bev_ddp.data.lidar_io import load_points
from bev_ddp.data.sensors import CAMERA_NAMES, LIDAR_NAME
from bev_ddp.data.synthetic import generate_world, load_settings
from bev_ddp.data.synthetic.render import PAINTS
from bev_ddp.data.synthetic.world import build_scene


def _nusc(world):
    return NuScenes(version="v1.0-mini", dataroot=str(world), verbose=False)


def test_devkit_loads_tables_and_chains(world):
    nusc = _nusc(world)
    assert len(nusc.scene) == 2
    assert len(nusc.sample) == 2 * 3
    scene = nusc.scene[0]
    sample = nusc.get("sample", scene["first_sample_token"])
    assert set(sample["data"]) == {*CAMERA_NAMES, LIDAR_NAME}
    # the LiDAR chain of the second keyframe reaches back through 9 sweeps to the first keyframe
    second = nusc.get("sample", sample["next"])
    sd = nusc.get("sample_data", second["data"][LIDAR_NAME])
    steps = 0
    while not (sd["is_key_frame"] and sd["token"] != second["data"][LIDAR_NAME]):
        sd = nusc.get("sample_data", sd["prev"])
        steps += 1
    assert steps == 10 and sd["token"] == sample["data"][LIDAR_NAME]
    assert sd["filename"].startswith("samples/LIDAR_TOP/")
    assert nusc.get("sample_data", sd["next"])["filename"].startswith("sweeps/LIDAR_TOP/")
    cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    path, _, intrinsic = nusc.get_sample_data(cam["token"])
    with Image.open(path) as im:
        assert im.size == (cam["width"], cam["height"]) == (176, 96)
    assert intrinsic[0, 2] < cam["width"] and intrinsic[1, 2] < cam["height"]


def test_map_expansion_loads_with_all_six_classes(world):
    settings = load_settings(world)
    nusc_map = load_map(world, settings.location)
    for layer in ("drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "road_divider",
                  "lane_divider"):
        assert len(getattr(nusc_map, layer)) > 0, layer
    # the devkit's own patch query finds records around the town centre
    town, _ = build_scene(settings)
    x0, y0, x1, y1 = town.bounds
    records = nusc_map.get_records_in_patch(((x0 + x1) / 2 - 60, (y0 + y1) / 2 - 60, (x0 + x1) / 2 + 60,
                                              (y0 + y1) / 2 + 60), ["ped_crossing", "walkway"])
    assert records["ped_crossing"] and records["walkway"]


def test_projected_map_points_land_on_their_class_in_the_images(world, walkway_points):
    """Walkway points of the map, projected with the tables' calibration, hit walkway-coloured pixels."""
    nusc = _nusc(world)
    points = walkway_points
    walkway = np.array(PAINTS["walkway"][0], float)
    asphalt = np.array(PAINTS["asphalt"][0], float)
    near_walkway = near_asphalt = 0
    for sample in nusc.sample:
        for channel in CAMERA_NAMES:
            sd = nusc.get("sample_data", sample["data"][channel])
            calib = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            cam2global = record_to_matrix(nusc.get("ego_pose", sd["ego_pose_token"])) @ record_to_matrix(calib)
            g2c = np.linalg.inv(cam2global)
            cam = np.c_[points, np.zeros(len(points))] @ g2c[:3, :3].T + g2c[:3, 3]
            ahead = (cam[:, 2] > 1.0) & (cam[:, 2] < 15.0)  # close: a pixel covers a few cm
            uv = cam[ahead] @ np.asarray(calib["camera_intrinsic"]).T
            uv = uv[:, :2] / uv[:, 2:]
            inside = (uv[:, 0] >= 1) & (uv[:, 0] < sd["width"] - 1) & (uv[:, 1] >= 1) & (uv[:, 1] < sd["height"] - 1)
            if not inside.any():
                continue
            image = np.asarray(Image.open(world / sd["filename"]).convert("RGB"), float)
            pix = image[uv[inside, 1].astype(int), uv[inside, 0].astype(int)]
            near_walkway += int((np.linalg.norm(pix - walkway, axis=1) < 40).sum())
            near_asphalt += int((np.linalg.norm(pix - asphalt, axis=1) < 40).sum())
    assert near_walkway > 20
    assert near_walkway > 10 * near_asphalt


def test_lidar_points_lie_on_ground_or_boxes(world):
    nusc = _nusc(world)
    town, _ = build_scene(load_settings(world))
    sample = nusc.sample[1]
    sd = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    calib = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    points = load_points(world / sd["filename"])
    assert points.shape[1] == 5 and len(points) > 1000
    # ground points sit at minus the mounting height in the (level) lidar frame
    low = points[points[:, 2] < -1.0]
    assert abs(float(np.median(low[:, 2])) + calib["translation"][2]) < 0.02
    lidar2global = record_to_matrix(nusc.get("ego_pose", sd["ego_pose_token"])) @ record_to_matrix(calib)
    xyz = points[:, :3] @ lidar2global[:3, :3].T + lidar2global[:3, 3]
    on_ground = np.abs(xyz[:, 2]) < 0.1
    lo, hi = town.boxes[:, :3] - 0.1, town.boxes[:, 3:] + 0.1
    on_box = np.any(np.all((xyz[:, None] >= lo) & (xyz[:, None] <= hi), axis=2), axis=1)
    assert on_ground.mean() > 0.5
    assert (on_ground | on_box).mean() > 0.99
    assert set(np.unique(points[:, 4]).astype(int)) <= set(range(32))
    assert 0 <= points[:, 3].min() and points[:, 3].max() <= 255


def test_generation_is_deterministic(tmp_path):
    kwargs = dict(num_scenes=1, samples_per_scene=1, image_size=(24, 40), lidar_azimuth_steps=90, town_size=200.0)
    a = generate_world(tmp_path / "a", seed=3, **kwargs)
    b = generate_world(tmp_path / "b", seed=3, **kwargs)
    c = generate_world(tmp_path / "c", seed=4, **kwargs)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    assert json.loads((a / "v1.0-mini" / "ego_pose.json").read_text()) != json.loads(
        (c / "v1.0-mini" / "ego_pose.json").read_text())


def test_parked_cars_are_annotated(tmp_path):
    root = generate_world(tmp_path / "w", num_scenes=2, samples_per_scene=4, seed=0, image_size=(16, 32),
                          lidar_azimuth_steps=180)
    nusc = _nusc(root)
    town, _ = build_scene(load_settings(root))
    assert nusc.sample_annotation, "seed 0 drives past a car park"
    for ann in nusc.sample_annotation:
        box = nusc.get_box(ann["token"])
        assert ann["category_name"] == "vehicle.car"
        corners = box.corners().T  # [8, 3] global
        match = [k for k, kind in enumerate(town.box_kinds) if kind == "car"
                 and np.allclose(corners.min(0), town.boxes[k, :3], atol=1e-6)
                 and np.allclose(corners.max(0), town.boxes[k, 3:], atol=1e-6)]
        assert len(match) == 1
    sample = nusc.get("sample", nusc.sample_annotation[0]["sample_token"])
    _, boxes, _ = nusc.get_sample_data(sample["data"][LIDAR_NAME])
    assert boxes and all(abs(b.center[2] - (b.wlh[2] / 2 - 1.84)) < 1e-6 for b in boxes)


def test_ground_raster_matches_the_map_expansion(world):
    """The surface the cameras and LiDAR see has the class the written map gives it."""
    from shapely.geometry import Point

    from bev_ddp.data.synthetic.render import CARPARK, CROSSING, STOP_LINE, WALKWAY

    nusc_map = load_map(world, load_settings(world).location)
    _, raster = build_scene(load_settings(world))
    rng = np.random.default_rng(0)
    for layer, label, inset in (("carpark_area", CARPARK, 0.3), ("walkway", WALKWAY, 0.3),
                                ("ped_crossing", CROSSING, 0.3), ("stop_line", STOP_LINE, 0.12)):
        polys = [nusc_map.extract_polygon(r["polygon_token"]).buffer(-inset) for r in getattr(nusc_map, layer)]
        pts = []
        for poly in polys:
            minx, miny, maxx, maxy = poly.bounds
            for x, y in zip(rng.uniform(minx, maxx, 50), rng.uniform(miny, maxy, 50)):
                if poly.contains(Point(x, y)):
                    pts.append((x, y))
        assert len(pts) > 20, layer
        _, labels = raster.lookup(np.array(pts))
        assert (labels == label).mean() > 0.99, layer


def test_interrupted_generation_is_redone(tmp_path, monkeypatch):
    from bev_ddp.data.synthetic import tiny, world as world_module

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(world_module, "_write_scene", interrupted)
    try:
        tiny.tiny_world(tmp_path, samples_per_scene=1)
    except KeyboardInterrupt:
        pass
    assert calls and not world_module.is_complete(tmp_path / "synth")
    monkeypatch.undo()
    root = tiny.tiny_world(tmp_path, samples_per_scene=1)
    assert world_module.is_complete(root)
    assert len(NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False).sample) == 2


def test_camera_sweeps_between_keyframes_are_chained_and_keyframes_unchanged(tmp_path):
    kwargs = dict(num_scenes=1, samples_per_scene=2, image_size=(32, 56), lidar_azimuth_steps=90)
    plain = generate_world(tmp_path / "plain", **kwargs)
    dense = generate_world(tmp_path / "dense", camera_every=2, **kwargs)
    nusc = NuScenes("v1.0-mini", str(dense), verbose=False)
    # 20 LiDAR frames: keyframes 9 and 19 plus the even frames 0..18 in between -> 12 images per camera
    for channel in CAMERA_NAMES:
        records = sorted((r for r in nusc.sample_data if r["channel"] == channel), key=lambda r: r["timestamp"])
        assert len(records) == 12
        assert sum(r["is_key_frame"] for r in records) == 2
        for a, b in zip(records, records[1:]):
            assert a["next"] == b["token"] and b["prev"] == a["token"] and a["timestamp"] < b["timestamp"]
        for r in records:
            assert r["filename"].startswith("samples/" if r["is_key_frame"] else "sweeps/")
            assert (dense / r["filename"]).is_file()
    # samples still point at the keyframe images, which are byte-identical to a keyframes-only world
    for sample in nusc.sample:
        record = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        assert record["is_key_frame"]
        assert filecmp.cmp(dense / record["filename"], plain / record["filename"], shallow=False)
    assert load_settings(dense).camera_every == 2
