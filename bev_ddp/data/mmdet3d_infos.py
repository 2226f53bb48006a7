"""Our info records → mmdet3d 1.x info files (``info_version`` 1.1), so one world feeds both front ends.

mmdet3d's ``NuScenesDataset`` reads a pickle ``{'metainfo': {...}, 'data_list': [record, ...]}``.
Per keyframe (mmdet3d key ← ours; timestamps in seconds there, µs here)::

    token, sample_idx, timestamp ← token, position, timestamp / 1e6
    ego2global                   ← ego2global [4×4]
    lidar_points                 ← {lidar_path: basename of lidar_path, num_pts_feats: 5, lidar2ego}
    lidar_sweeps[j]              ← sweeps[j]: {lidar_points: {lidar_path: basename, lidar2sensor},
                                   timestamp (s)}, newest first
    images[CAM]                  ← cams[CAM]: {img_path (relative to the dataroot), cam2img [3×3],
                                   cam2ego, lidar2cam = inverse(camera2lidar), timestamp (s)}
    location, scene_name         ← location, scene_name (extra keys: mmdet3d passes them through)
    instances, cam_instances     ← none (map labels come from the map, :class:`BEVMapLabels`)

``lidar2sensor`` is written so that mmdet3d's ``LoadPointsFromMultiSweeps`` (``p @ R − t``) lands
the sweep's points where our ``sensor2lidar`` puts them: ``R = sensor2lidar[:3, :3]ᵀ``, ``t =
−sensor2lidar[:3, 3]``.  Paths: mmdet3d joins LiDAR file names to ``data_prefix['pts']`` /
``['sweeps']`` and image paths to ``data_prefix[CAM]``; the configs under ``configs/mmdet3d/`` set
``pts='samples/LIDAR_TOP'``, ``sweeps='sweeps/LIDAR_TOP'`` and every camera to ``''``.
"""
from __future__ import annotations

import pickle
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from bev_ddp.output_files import write_bytes_atomic

INFO_VERSION = "1.1"
# mmdet3d's nuScenes detection classes: its NuScenesDataset checks metainfo against them
DETECTION_CLASSES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle",
                     "pedestrian", "traffic_cone", "barrier")


def _lists(m: Any) -> list[list[float]]:
    return np.asarray(m, dtype=np.float64).tolist()


def sweep_record(sweep: dict[str, Any]) -> dict[str, Any]:
    """mmdet3d's ``lidar_sweeps`` entry of one of our sweep records (see the module docstring)."""
    sensor2lidar = np.asarray(sweep["sensor2lidar"], dtype=np.float64)
    lidar2sensor = np.eye(4)
    lidar2sensor[:3, :3] = sensor2lidar[:3, :3].T
    lidar2sensor[:3, 3] = -sensor2lidar[:3, 3]
    return {"lidar_points": {"lidar_path": PurePosixPath(sweep["path"]).name, "lidar2sensor": lidar2sensor.tolist()},
            "timestamp": sweep["timestamp"] / 1e6}


def data_record(index: int, info: dict[str, Any]) -> dict[str, Any]:
    """mmdet3d 1.x ``data_list`` record of one of our info records."""
    images = {}
    for name, cam in info["cams"].items():
        images[name] = {
            "img_path": cam["path"],
            "cam2img": _lists(cam["intrinsics"]),
            "cam2ego": _lists(cam["camera2ego"]),
            "lidar2cam": np.linalg.inv(np.asarray(cam["camera2lidar"], dtype=np.float64)).tolist(),
            "timestamp": cam.get("timestamp", info["timestamp"]) / 1e6,
        }
    return {
        "sample_idx": index,
        "token": info["token"],
        "timestamp": info["timestamp"] / 1e6,
        "ego2global": _lists(info["ego2global"]),
        "lidar_points": {"num_pts_feats": 5, "lidar_path": PurePosixPath(info["lidar_path"]).name,
                         "lidar2ego": _lists(info["lidar2ego"])},
        "lidar_sweeps": [sweep_record(s) for s in info["sweeps"]],
        "images": images,
        "location": info["location"],
        "scene_name": info["scene_name"],
        "instances": [],
        "cam_instances": {},
    }


def to_mmdet3d_infos(metadata: dict[str, Any], infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The mmdet3d 1.x info document of one split."""
    return {
        "metainfo": {"categories": {c: i for i, c in enumerate(DETECTION_CLASSES)}, "dataset": "nuscenes",
                     "version": metadata.get("version", "v1.0-trainval"), "info_version": INFO_VERSION},
        "data_list": [data_record(i, info) for i, info in enumerate(infos)],
    }


def write_mmdet3d_infos(path: str | Path, metadata: dict[str, Any], infos: list[dict[str, Any]]) -> Path:
    """Write :func:`to_mmdet3d_infos` as a pickle (temporary name, then renamed)."""
    return write_bytes_atomic(Path(path), pickle.dumps(to_mmdet3d_infos(metadata, infos), protocol=4))
