"""Info files: one JSON document per split listing every keyframe's files and calibration.

Document layout::

    {"metadata": {"format": "bev_ddp.infos/1", "version": ..., "split": "train",
                  "split_scenes": {"train": [...], "val": [...]}, "split_source": ...,
                  "camera_names": [...], "max_sweeps": 10},
     "infos": [ {token, scene_token, scene_name, timestamp (µs), location,
                 lidar_path, lidar2ego [4×4], ego2global [4×4],
                 sweeps: [{path, timestamp, time_lag (s), sensor2lidar [4×4]}],   # newest first
                 cams: {CAM_*: {path, timestamp, width, height, intrinsics [3×3],
                                camera2ego, camera2lidar, ego2global [4×4]}}}, ... ]}

Paths are relative to the dataroot.  Reading BEVFusion's pickled infos needs an explicit
``allow_pickle=True`` (pickle runs code from the file).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bev_ddp.errors import InputError
from bev_ddp.files import read_json

INFO_FORMAT = "bev_ddp.infos/1"
_SWEEP_KEYS = ("path", "timestamp", "time_lag", "sensor2lidar")
_CAMERA_KEYS = ("path", "width", "height", "intrinsics", "camera2ego", "camera2lidar", "ego2global")
_REQUIRED = ("token", "scene_name", "timestamp", "location", "lidar_path", "lidar2ego", "ego2global", "sweeps", "cams")


def write_infos(path: str | Path, metadata: dict[str, Any], infos: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"metadata": metadata, "infos": infos}), encoding="utf-8")
    tmp.replace(path)
    return path


def read_infos(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metadata, infos) of an info JSON file; malformed files raise :class:`InputError` naming it."""
    path = Path(path)
    doc = read_json(path, what="info file")
    if not isinstance(doc, dict) or "infos" not in doc or not isinstance(doc["infos"], list):
        raise InputError(f"info file {path} must hold {{'metadata': ..., 'infos': [...]}}")
    for i, info in enumerate(doc["infos"]):
        missing = [k for k in _REQUIRED if not isinstance(info, dict) or k not in info]
        if missing:
            raise InputError(f"info file {path}: record {i} lacks {missing}")
        for j, sweep in enumerate(info["sweeps"]):
            _check_keys(path, i, f"sweeps[{j}]", sweep, _SWEEP_KEYS)
        if not isinstance(info["cams"], dict):
            raise InputError(f"info file {path}: record {i} 'cams' must map camera names to records")
        for name, cam in info["cams"].items():
            _check_keys(path, i, f"cams.{name}", cam, _CAMERA_KEYS)
        matrices = {"lidar2ego": info["lidar2ego"], "ego2global": info["ego2global"]}
        matrices.update({f"sweeps[{j}].sensor2lidar": s.get("sensor2lidar") for j, s in enumerate(info["sweeps"])})
        for name, cam in info["cams"].items():
            matrices.update({f"cams.{name}.{k}": cam.get(k) for k in ("camera2ego", "camera2lidar", "ego2global")})
            _check_matrix(path, i, f"cams.{name}.intrinsics", cam.get("intrinsics"), (3, 3))
        for name, value in matrices.items():
            _check_matrix(path, i, name, value, (4, 4))
    return doc.get("metadata", {}), doc["infos"]


def _check_keys(path: Path, index: int, name: str, value: Any, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        raise InputError(f"info file {path}: record {index} {name} lacks {missing}")


def _check_matrix(path: Path, index: int, name: str, value: Any, shape: tuple[int, int]) -> None:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != shape or not np.isfinite(m).all():
        raise InputError(
            f"info file {path}: record {index} has a bad {name} (need a finite {shape[0]}x{shape[1]} matrix)")


def _rt(rotation: Any, translation: Any) -> list[list[float]]:
    from pyquaternion import Quaternion

    out = np.eye(4)
    rot = np.asarray(rotation, dtype=np.float64)
    out[:3, :3] = Quaternion(rot).rotation_matrix if rot.shape == (4,) else rot
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out.tolist()


def _relative(path: str, dataroot: Path) -> str:
    p = Path(path)
    for anchor in ("samples", "sweeps"):
        if anchor in p.parts:
            return str(Path(*p.parts[p.parts.index(anchor):]))
    try:
        return str(p.relative_to(dataroot))
    except ValueError:
        return str(p)


def read_bevfusion_pkl(path: str | Path, dataroot: str | Path, *, allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Convert BEVFusion/mmdet3d ``nuscenes_infos_*.pkl`` records to our info records.

    Only with ``allow_pickle=True``: unpickling executes code stored in the file, so only do it
    for files you trust.  The location is not stored in those files and is set to ``""``
    (fill it from the nuScenes log table before rasterising map labels).
    """
    if not allow_pickle:
        raise InputError(f"refusing to unpickle {path}: pass allow_pickle=True (--allow-pickle) for trusted files")
    import pickle

    path, dataroot = Path(path), Path(dataroot)
    try:
        with path.open("rb") as fh:
            data = pickle.load(fh)  # noqa: S301 - explicitly allowed by the caller
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise InputError(f"cannot read pickled infos {path}: {exc}") from exc
    records = data["infos"] if isinstance(data, dict) and "infos" in data else data
    out = []
    for rec in records:
        lidar2ego = np.asarray(_rt(rec["lidar2ego_rotation"], rec["lidar2ego_translation"]))
        out.append({
            "token": rec["token"],
            "scene_token": rec.get("scene_token", ""),
            "scene_name": rec.get("scene_name", rec.get("scene_token", "")),
            "timestamp": int(rec["timestamp"]),
            "location": rec.get("location", ""),
            "lidar_path": _relative(rec["lidar_path"], dataroot),
            "lidar2ego": lidar2ego.tolist(),
            "ego2global": _rt(rec["ego2global_rotation"], rec["ego2global_translation"]),
            "sweeps": [{
                "path": _relative(s["data_path"], dataroot),
                "timestamp": int(s["timestamp"]),
                "time_lag": (int(rec["timestamp"]) - int(s["timestamp"])) / 1e6,
                "sensor2lidar": _rt(s["sensor2lidar_rotation"], s["sensor2lidar_translation"]),
            } for s in rec.get("sweeps", [])],
            "cams": {name: {
                "path": _relative(c["data_path"], dataroot),
                "timestamp": int(c["timestamp"]),
                "width": int(c.get("width", 1600)),
                "height": int(c.get("height", 900)),
                "intrinsics": np.asarray(c["camera_intrinsics"], dtype=np.float64).tolist(),
                "camera2ego": _rt(c["sensor2ego_rotation"], c["sensor2ego_translation"]),
                "camera2lidar": _rt(c["sensor2lidar_rotation"], c["sensor2lidar_translation"]),
                "ego2global": _rt(c["ego2global_rotation"], c["ego2global_translation"]),
            } for name, c in rec["cams"].items()},
        })
    return out
