"""Build bev_ddp info files from a nuScenes dataroot with nuscenes-devkit.

One info record per keyframe (see :mod:`bev_ddp.data.infos` for the fields): LiDAR path and
calibration, up to ``max_sweeps`` previous LiDAR frames with sweep → keyframe-lidar transforms and
time lags, the six cameras with intrinsics and camera → lidar / ego transforms, the ego pose and
the map location.  Infos are JSON; the split (official or deterministic) is recorded in them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from nuscenes.nuscenes import NuScenes

from bev_ddp.data.geometry import record_to_matrix
from bev_ddp.data.infos import INFO_FORMAT, write_infos
from bev_ddp.data.sensors import CAMERA_NAMES, LIDAR_NAME
from bev_ddp.data.splits import split_scenes
from bev_ddp.errors import InputError
from bev_ddp.files import read_json

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")


def check_tables(dataroot: Path, version: str) -> None:
    """Raise :class:`InputError` naming the first missing or malformed table of ``version``."""
    folder = dataroot / version
    if not folder.is_dir():
        raise InputError(f"nuScenes version folder not found: {folder}")
    for name in TABLES:
        path = folder / f"{name}.json"
        rows = read_json(path, what="nuScenes table")
        if not isinstance(rows, list) or any(not isinstance(r, dict) or "token" not in r for r in rows):
            raise InputError(f"nuScenes table {path} must be a list of records that each have a 'token'")


def load_nuscenes(dataroot: str | Path, version: str) -> NuScenes:
    """``NuScenes(version, dataroot)`` after checking every table; errors name the bad file."""
    dataroot = Path(dataroot)
    check_tables(dataroot, version)
    try:
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (KeyError, AssertionError, TypeError) as exc:
        raise InputError(f"nuScenes tables in {dataroot / version} are inconsistent: {exc!r}") from exc


def _pose(nusc: NuScenes, sd: dict) -> tuple[np.ndarray, np.ndarray]:
    """(sensor → ego, ego → global) of a sample_data record."""
    return (record_to_matrix(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])),
            record_to_matrix(nusc.get("ego_pose", sd["ego_pose_token"])))


def _matrix(m: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in m]


def sample_info(nusc: NuScenes, sample: dict, max_sweeps: int = 10) -> dict:
    """The info record of one keyframe ``sample``."""
    lidar_sd = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    lidar2ego, ego2global = _pose(nusc, lidar_sd)
    global2lidar = np.linalg.inv(ego2global @ lidar2ego)
    scene = nusc.get("scene", sample["scene_token"])
    location = nusc.get("log", scene["log_token"])["location"]

    sweeps = []
    sd = lidar_sd
    while len(sweeps) < max_sweeps and sd["prev"]:
        sd = nusc.get("sample_data", sd["prev"])
        s2e, e2g = _pose(nusc, sd)
        sweeps.append({
            "path": sd["filename"],
            "timestamp": int(sd["timestamp"]),
            "time_lag": (lidar_sd["timestamp"] - sd["timestamp"]) / 1e6,
            "sensor2lidar": _matrix(global2lidar @ e2g @ s2e),
        })

    cams = {}
    for channel in CAMERA_NAMES:
        if channel not in sample["data"]:
            continue
        cam_sd = nusc.get("sample_data", sample["data"][channel])
        cam2ego, cam_ego2global = _pose(nusc, cam_sd)
        calib = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
        cams[channel] = {
            "path": cam_sd["filename"],
            "timestamp": int(cam_sd["timestamp"]),
            "width": int(cam_sd["width"]),
            "height": int(cam_sd["height"]),
            "intrinsics": _matrix(np.asarray(calib["camera_intrinsic"], dtype=np.float64)),
            "camera2ego": _matrix(cam2ego),
            "camera2lidar": _matrix(global2lidar @ cam_ego2global @ cam2ego),
            "ego2global": _matrix(cam_ego2global),
        }
    return {
        "token": sample["token"],
        "scene_token": scene["token"],
        "scene_name": scene["name"],
        "timestamp": int(sample["timestamp"]),
        "location": location,
        "lidar_path": lidar_sd["filename"],
        "lidar2ego": _matrix(lidar2ego),
        "ego2global": _matrix(ego2global),
        "sweeps": sweeps,
        "cams": cams,
    }


def create_infos(dataroot: str | Path, version: str, out_dir: str | Path | None = None, *,
                 max_sweeps: int = 10, prefix: str = "bev_ddp_infos") -> dict[str, Path]:
    """Write ``<out_dir>/<prefix>_{train,val}.json`` for ``version``; returns split → path."""
    dataroot = Path(dataroot)
    out_dir = Path(out_dir) if out_dir is not None else dataroot / "infos"
    nusc = load_nuscenes(dataroot, version)
    split, source = split_scenes([s["name"] for s in nusc.scene], version)
    paths = {}
    for name, scene_names in split.items():
        wanted = set(scene_names)
        infos = []
        for scene in sorted(nusc.scene, key=lambda s: s["name"]):
            if scene["name"] not in wanted:
                continue
            token = scene["first_sample_token"]
            while token:
                try:
                    sample = nusc.get("sample", token)
                    infos.append(sample_info(nusc, sample, max_sweeps))
                except KeyError as exc:
                    raise InputError(f"nuScenes tables in {dataroot / version} are inconsistent: a record lacks "
                                     f"field or token {exc} (scene {scene['name']})") from exc
                token = sample["next"]
        metadata = {"format": INFO_FORMAT, "version": version, "split": name, "split_scenes": split,
                    "split_source": source, "camera_names": list(CAMERA_NAMES), "max_sweeps": max_sweeps}
        paths[name] = write_infos(out_dir / f"{prefix}_{name}.json", metadata, infos)
    return paths
