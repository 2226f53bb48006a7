"""Generate a synthetic town in real nuScenes format (tables, map expansion, images, LiDAR).

Layout of the written dataroot::

    D/v1.0-mini/*.json                 the 13 nuScenes tables
    D/maps/expansion/<location>.json   map expansion (NuScenesMap)
    D/maps/<token>.png                 semantic-prior basemap (NuScenes map table)
    D/samples/CAM_*/*.jpg              keyframe images rendered from the scene geometry
    D/samples/LIDAR_TOP/*.pcd.bin      keyframe LiDAR (x, y, z, intensity, ring)
    D/sweeps/LIDAR_TOP/*.pcd.bin       the 9 sweeps between keyframes (20 Hz)
    D/synthetic_world.json             generator settings (seed, sizes) to rebuild the scene, and
                                       whether the generation completed

Timing follows nuScenes: keyframes at 2 Hz, LiDAR at 20 Hz.  Cameras are written at keyframes and,
with ``camera_every=k``, also at every k-th LiDAR frame between them (``sweeps/CAM_*``, not key
frames; k=2 gives 10 Hz), so a replayed drive has images near every LiDAR sweep.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bev_ddp.data.bev_map import MAP_LOCATIONS
from bev_ddp.data.geometry import matrix_to_quaternion
from bev_ddp.data.lidar_io import write_points
from bev_ddp.data.sensors import CAMERA_NAMES, CAMERA_RIG, LIDAR_NAME, LidarSpec
from bev_ddp.data.synthetic.map_expansion import make_token, write_basemap, write_map_expansion
from bev_ddp.data.synthetic.render import SurfaceRaster, paint_town, render_camera, scan_lidar
from bev_ddp.data.synthetic.town import Town, build_town
from bev_ddp.data.synthetic.trajectory import plan_route
from bev_ddp.errors import InputError
from bev_ddp.files import read_json

WORLD_FILE = "synthetic_world.json"
KEYFRAME_INTERVAL_US = 500_000
LIDAR_INTERVAL_US = 50_000
SWEEPS_PER_KEYFRAME = KEYFRAME_INTERVAL_US // LIDAR_INTERVAL_US  # 10 LiDAR frames per keyframe
FIRST_TIMESTAMP_US = 1_533_151_600_000_000

CATEGORIES = ["vehicle.car", "human.pedestrian.adult", "movable_object.barrier", "static_object.bicycle_rack"]
ATTRIBUTES = ["vehicle.parked", "vehicle.moving", "pedestrian.standing"]
VISIBILITIES = [("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]


@dataclass(frozen=True)
class WorldSettings:
    """Generator settings, stored in ``synthetic_world.json``.

    Attributes:
        seed: master seed; every random stream derives from it.
        num_scenes, samples_per_scene: scenes and keyframes per scene.
        image_size: (H, W) of the written camera images (intrinsics are scaled to it).
        location: nuScenes map name the town is written under (the devkit knows only the four
            real ones).
        lidar_azimuth_steps: LiDAR columns per revolution.
        town_size: side of the square town, m.
        camera_every: 0 = cameras at keyframes only; k > 0 = also at every k-th LiDAR frame.
        version: table folder name.
    """

    seed: int = 0
    num_scenes: int = 2
    samples_per_scene: int = 10
    image_size: tuple[int, int] = (225, 400)
    location: str = "singapore-onenorth"
    lidar_azimuth_steps: int = 720
    town_size: float = 320.0
    version: str = "v1.0-mini"
    camera_every: int = 0


def _rng(settings: WorldSettings, *stream: int) -> np.random.Generator:
    return np.random.default_rng([settings.seed, *stream])


def build_scene(settings: WorldSettings) -> tuple[Town, SurfaceRaster]:
    """The town and its ground raster for ``settings`` (identical on every call)."""
    town = build_town(_rng(settings, 0), size=settings.town_size)
    return town, paint_town(town)


def _ego_pose(x: float, y: float, yaw: float) -> np.ndarray:
    out = np.eye(4)
    out[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    out[:2, 3] = (x, y)
    return out


class _Tables:
    """The nuScenes tables being written, with prev/next chaining per sensor."""

    def __init__(self) -> None:
        self.data: dict[str, list[dict]] = {name: [] for name in (
            "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
            "scene", "sample", "sample_data", "sample_annotation", "map")}

    def add_ego_pose(self, token: str, pose: np.ndarray, timestamp: int) -> str:
        self.data["ego_pose"].append({"token": token, "timestamp": timestamp,
                                      "rotation": matrix_to_quaternion(pose[:3, :3]),
                                      "translation": [float(v) for v in pose[:3, 3]]})
        return token

    def chain(self, records: list[dict]) -> None:
        for prev, nxt in zip(records[:-1], records[1:]):
            prev["next"], nxt["prev"] = nxt["token"], prev["token"]

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in self.data.items():
            (folder / f"{name}.json").write_text(json.dumps(rows, indent=0), encoding="utf-8")


def _static_tables(tables: _Tables, settings: WorldSettings, salt: str) -> dict[str, str]:
    """Category/attribute/visibility/sensor/calibrated_sensor rows; returns channel → calib token."""
    for name in CATEGORIES:
        tables.data["category"].append({"token": make_token(salt, "category", name), "name": name, "description": name})
    for name in ATTRIBUTES:
        tables.data["attribute"].append({"token": make_token(salt, "attribute", name), "name": name,
                                         "description": name})
    for token, level in VISIBILITIES:
        tables.data["visibility"].append({"token": token, "level": level, "description": f"visibility {level}"})
    calib: dict[str, str] = {}
    lidar = LidarSpec()
    for channel in (*CAMERA_NAMES, LIDAR_NAME):
        sensor_token = make_token(salt, "sensor", channel)
        modality = "lidar" if channel == LIDAR_NAME else "camera"
        tables.data["sensor"].append({"token": sensor_token, "channel": channel, "modality": modality})
        if modality == "camera":
            spec = CAMERA_RIG[channel]
            transform, intrinsic = spec.camera2ego(), spec.intrinsics(settings.image_size).tolist()
        else:
            transform, intrinsic = lidar.lidar2ego(), []
        calib[channel] = make_token(salt, "calibrated_sensor", channel)
        tables.data["calibrated_sensor"].append({
            "token": calib[channel], "sensor_token": sensor_token,
            "translation": [float(v) for v in transform[:3, 3]],
            "rotation": matrix_to_quaternion(transform[:3, :3]),
            "camera_intrinsic": intrinsic,
        })
    return calib


ANNOTATION_RANGE = 70.0  # m (the LiDAR range): parked cars closer than this to the ego are annotated


def _visible_cars(town: Town, ego2global: np.ndarray, lidar2global: np.ndarray, points: np.ndarray) -> dict[int, int]:
    """Car boxes within :data:`ANNOTATION_RANGE` of the ego and the keyframe LiDAR points on each."""
    xyz = points[:, :3].astype(np.float64) @ lidar2global[:3, :3].T + lidar2global[:3, 3]
    out = {}
    for k, kind in enumerate(town.box_kinds):
        if kind != "car":
            continue
        lo, hi = town.boxes[k, :3], town.boxes[k, 3:]
        if np.linalg.norm((lo[:2] + hi[:2]) / 2 - ego2global[:2, 3]) > ANNOTATION_RANGE:
            continue
        inside = np.all((xyz >= lo - 0.05) & (xyz <= hi + 0.05), axis=1)
        out[k] = int(inside.sum())
    return out


def _annotate_cars(tables: _Tables, town: Town, per_keyframe: list[dict[int, int]], sample_tokens: list[str],
                   salt: str, scene_index: int) -> None:
    """``instance`` and ``sample_annotation`` rows of the parked cars seen in one scene."""
    category = make_token(salt, "category", "vehicle.car")
    parked = make_token(salt, "attribute", "vehicle.parked")
    heading = matrix_to_quaternion(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))  # along +y
    for car in sorted({k for frame in per_keyframe for k in frame}):
        lo, hi = town.boxes[car, :3], town.boxes[car, 3:]
        instance = make_token(salt, "instance", scene_index, car)
        rows = []
        for k, frame in enumerate(per_keyframe):
            if car not in frame:
                continue
            rows.append({
                "token": make_token(salt, "sample_annotation", scene_index, car, k),
                "sample_token": sample_tokens[k], "instance_token": instance, "visibility_token": "4",
                "attribute_tokens": [parked], "translation": [float(v) for v in (lo + hi) / 2],
                # nuScenes size is (width, length, height); the car's length runs along y
                "size": [float(hi[0] - lo[0]), float(hi[1] - lo[1]), float(hi[2] - lo[2])],
                "rotation": heading, "num_lidar_pts": frame[car], "num_radar_pts": 0, "prev": "", "next": "",
            })
        tables.chain(rows)
        tables.data["sample_annotation"].extend(rows)
        tables.data["instance"].append({"token": instance, "category_token": category, "nbr_annotations": len(rows),
                                        "first_annotation_token": rows[0]["token"],
                                        "last_annotation_token": rows[-1]["token"]})


def _sample_data(token: str, sample: str, ego_pose: str, calib: str, timestamp: int, filename: str, *, key: bool,
                 size: tuple[int, int] | None = None) -> dict:
    """A ``sample_data`` row (``size`` = (H, W) for images, None for LiDAR); prev/next are chained later."""
    return {
        "token": token, "sample_token": sample, "ego_pose_token": ego_pose, "calibrated_sensor_token": calib,
        "timestamp": timestamp, "fileformat": "jpg" if size else "pcd", "is_key_frame": key,
        "height": size[0] if size else 0, "width": size[1] if size else 0, "filename": filename,
        "prev": "", "next": "",
    }


def _write_scene(root: Path, tables: _Tables, settings: WorldSettings, town: Town, raster: SurfaceRaster,
                 calib: dict[str, str], scene_index: int, salt: str) -> str:
    """Drive one scene through the town and write its records and files; returns the log token."""
    rng = _rng(settings, 1, scene_index)
    speed = float(rng.uniform(4.0, 9.0))  # m/s
    num_frames = SWEEPS_PER_KEYFRAME * settings.samples_per_scene  # LiDAR frames at 20 Hz
    route = plan_route(town, rng, speed * num_frames * LIDAR_INTERVAL_US / 1e6 + 1.0)
    start_us = FIRST_TIMESTAMP_US + scene_index * 3_600_000_000
    log_name = f"synth-{settings.seed}-{scene_index:04d}"
    log_token = make_token(salt, "log", scene_index)
    scene_token = make_token(salt, "scene", scene_index)
    tables.data["log"].append({"token": log_token, "logfile": log_name, "vehicle": "synth-car",
                               "date_captured": "2018-08-01", "location": settings.location})
    lidar = LidarSpec()
    lidar2ego = lidar.lidar2ego()
    sample_tokens = [make_token(salt, "sample", scene_index, k) for k in range(settings.samples_per_scene)]
    lidar_records: list[dict] = []
    camera_records: dict[str, list[dict]] = {c: [] for c in CAMERA_NAMES}
    samples = []
    annotations: list[dict[int, int]] = []  # per keyframe: car box index -> LiDAR points on it
    for frame in range(num_frames):
        timestamp = start_us + frame * LIDAR_INTERVAL_US
        pose = _ego_pose(*route.pose(speed * frame * LIDAR_INTERVAL_US / 1e6))
        key = (frame + 1) % SWEEPS_PER_KEYFRAME == 0  # 9 sweeps precede every keyframe
        k = frame // SWEEPS_PER_KEYFRAME  # the keyframe this frame belongs to
        folder = "samples" if key else "sweeps"
        name = f"{folder}/{LIDAR_NAME}/{log_name}__{LIDAR_NAME}__{timestamp}.pcd.bin"
        frame_rng = _rng(settings, 2, scene_index, frame)
        points = scan_lidar(town, raster, pose @ lidar2ego, lidar, settings.lidar_azimuth_steps, frame_rng)
        write_points(root / name, points)
        if key:
            annotations.append(_visible_cars(town, pose, pose @ lidar2ego, points))
        token = make_token(salt, "sample_data", scene_index, LIDAR_NAME, frame)
        lidar_records.append(_sample_data(token, sample_tokens[k], tables.add_ego_pose(token, pose, timestamp),
                                          calib[LIDAR_NAME], timestamp, name, key=key))
        if key:
            samples.append({"token": sample_tokens[k], "timestamp": timestamp, "scene_token": scene_token,
                            "prev": "", "next": ""})
        elif not (settings.camera_every and frame % settings.camera_every == 0):
            continue
        for cam_index, channel in enumerate(CAMERA_NAMES):
            image = render_camera(town, raster, pose @ CAMERA_RIG[channel].camera2ego(),
                                  CAMERA_RIG[channel].intrinsics(settings.image_size), settings.image_size,
                                  _rng(settings, 3, scene_index, frame, cam_index))
            name = f"{folder}/{channel}/{log_name}__{channel}__{timestamp}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.rgb).save(root / name, quality=92)
            token = make_token(salt, "sample_data", scene_index, channel, frame)
            camera_records[channel].append(_sample_data(
                token, sample_tokens[k], tables.add_ego_pose(token, pose, timestamp), calib[channel], timestamp,
                name, key=key, size=settings.image_size))
    tables.chain(lidar_records)
    tables.chain(samples)
    for records in camera_records.values():
        tables.chain(records)
        tables.data["sample_data"].extend(records)
    tables.data["sample_data"].extend(lidar_records)
    tables.data["sample"].extend(samples)
    _annotate_cars(tables, town, annotations, sample_tokens, salt, scene_index)
    tables.data["scene"].append({
        "token": scene_token, "log_token": log_token, "nbr_samples": len(samples),
        "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
        "name": f"synth-{scene_index:04d}", "description": f"synthetic town drive, seed {settings.seed}",
    })
    return log_token


def generate_world(out_dir: str | Path, num_scenes: int = 2, samples_per_scene: int = 10, seed: int = 0,
                   image_size: tuple[int, int] = (225, 400), *, location: str = "singapore-onenorth",
                   lidar_azimuth_steps: int = 720, town_size: float = 320.0, version: str = "v1.0-mini",
                   camera_every: int = 0) -> Path:
    """Write a synthetic nuScenes-format dataset to ``out_dir`` and return its path.

    Deterministic: the same arguments give byte-identical files.  See the module docstring for the
    layout; ``NuScenes(version, out_dir)`` and ``NuScenesMap(out_dir, location)`` load it.
    """
    if num_scenes < 1 or samples_per_scene < 1:
        raise InputError(f"num_scenes ({num_scenes}) and samples_per_scene ({samples_per_scene}) must be >= 1")
    if len(image_size) != 2 or min(image_size) < 8:
        raise InputError(f"image_size {tuple(image_size)} must be (H, W) with both >= 8 pixels")
    if town_size < 200.0:
        raise InputError(f"town_size ({town_size} m) must be >= 200 m (two roads each way)")
    if lidar_azimuth_steps < 8:
        raise InputError(f"lidar_azimuth_steps ({lidar_azimuth_steps}) must be >= 8")
    if camera_every < 0:
        raise InputError(f"camera_every ({camera_every}) must be >= 0 (0: cameras at keyframes only)")
    if location not in MAP_LOCATIONS:
        raise InputError(f"location {location!r} is not a nuScenes map name; choose from {', '.join(MAP_LOCATIONS)}")
    settings = WorldSettings(seed=seed, num_scenes=num_scenes, samples_per_scene=samples_per_scene,
                             image_size=(int(image_size[0]), int(image_size[1])), location=location,
                             lidar_azimuth_steps=lidar_azimuth_steps, town_size=town_size, version=version,
                             camera_every=int(camera_every))
    root = Path(out_dir)
    if (root / version).exists() and not (root / WORLD_FILE).is_file():
        raise InputError(f"refusing to write a synthetic world over {root}: it holds a {version} dataset "
                         f"that this generator did not write")
    for folder in ("samples", "sweeps", "maps", version):  # a previous synthetic world is replaced
        if (root / WORLD_FILE).is_file() and (root / folder).is_dir():
            shutil.rmtree(root / folder)
    root.mkdir(parents=True, exist_ok=True)
    _write_world_file(root, settings, complete=False)  # marks the folder as ours before anything else
    salt = f"synth-{seed}"
    town, raster = build_scene(settings)
    tables = _Tables()
    calib = _static_tables(tables, settings, salt)
    log_tokens = [_write_scene(root, tables, settings, town, raster, calib, i, salt) for i in range(num_scenes)]
    map_token = make_token(salt, "map", location)
    basemap = f"maps/{map_token}.png"
    write_basemap(root, basemap, town)
    write_map_expansion(root, location, town, salt)
    tables.data["map"].append({"token": map_token, "log_tokens": log_tokens, "category": "semantic_prior",
                               "filename": basemap})
    tables.write(root / version)
    _write_world_file(root, settings, complete=True)
    return root


def _write_world_file(root: Path, settings: WorldSettings, *, complete: bool) -> None:
    doc = {**asdict(settings), "complete": complete}
    (root / WORLD_FILE).write_text(json.dumps(doc, indent=2), encoding="utf-8")


def is_complete(dataroot: str | Path) -> bool:
    """True when ``dataroot`` holds a synthetic world whose generation ran to the end."""
    try:
        return bool(read_json(Path(dataroot) / WORLD_FILE, what="synthetic world file").get("complete"))
    except (OSError, InputError, AttributeError):
        return False


def load_settings(dataroot: str | Path) -> WorldSettings:
    """Read the generator settings of a synthetic dataroot."""
    path = Path(dataroot) / WORLD_FILE
    if not path.is_file():
        raise InputError(f"not a synthetic dataroot (no {WORLD_FILE}): {path}")
    data = read_json(path, what="synthetic world file")
    try:
        data.pop("complete", None)
        data["image_size"] = tuple(data["image_size"])
        return WorldSettings(**data)
    except (AttributeError, TypeError, KeyError) as exc:
        raise InputError(f"synthetic world file {path} is malformed: {exc}") from exc
