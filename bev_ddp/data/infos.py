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
import os
from pathlib import Path
from typing import Any

import numpy as np

from bev_ddp.errors import InputError
from bev_ddp.files import read_json
from bev_ddp.output_files import write_text_atomic

INFO_FORMAT = "bev_ddp.infos/1"
_SWEEP_KEYS = ("path", "timestamp", "time_lag", "sensor2lidar")
_CAMERA_KEYS = ("path", "width", "height", "intrinsics", "camera2ego", "camera2lidar", "ego2global")
_REQUIRED = ("token", "scene_name", "timestamp", "location", "lidar_path", "lidar2ego", "ego2global", "sweeps", "cams")


def write_infos(path: str | Path, metadata: dict[str, Any], infos: list[dict[str, Any]]) -> Path:
    path = Path(path)
    return write_text_atomic(path, json.dumps({"metadata": metadata, "infos": infos}))


def read_infos(path: str | Path, *, dataroot: str | Path | None = None,
               allow_outside_dataroot: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metadata, infos) of an info JSON file; malformed files raise :class:`InputError` naming it.

    Every value is checked here (types, finite 4×4 / 3×3 matrices, positive focal lengths and
    image sizes).  With ``dataroot``, every data path must resolve inside it (no absolute paths,
    no ``..`` escaping it) unless ``allow_outside_dataroot``.
    """
    path = Path(path)
    doc = read_json(path, what="info file")
    if not isinstance(doc, dict) or "infos" not in doc or not isinstance(doc["infos"], list):
        raise InputError(f"info file {path} must hold {{'metadata': ..., 'infos': [...]}}")
    check_records(doc["infos"], source=path, dataroot=dataroot, allow_outside_dataroot=allow_outside_dataroot)
    return doc.get("metadata", {}), doc["infos"]


def check_records(infos: list[dict[str, Any]], *, source: str | Path = "<records>", dataroot: str | Path | None = None,
                  allow_outside_dataroot: bool = False) -> list[dict[str, Any]]:
    """Check info records as :func:`read_infos` checks a file's (``source`` names them in messages);
    returns them unchanged."""
    path = source
    for i, info in enumerate(infos):
        missing = [k for k in _REQUIRED if not isinstance(info, dict) or k not in info]
        if missing:
            raise InputError(f"info file {path}: record {i} lacks {missing}")
        _check_types(path, i, "", info, _RECORD_TYPES)
        if not isinstance(info["sweeps"], list):
            raise InputError(f"info file {path}: record {i} 'sweeps' must be a list")
        for j, sweep in enumerate(info["sweeps"]):
            _check_keys(path, i, f"sweeps[{j}]", sweep, _SWEEP_KEYS)
            _check_types(path, i, f"sweeps[{j}].", sweep, _SWEEP_TYPES)
        if not isinstance(info["cams"], dict):
            raise InputError(f"info file {path}: record {i} 'cams' must map camera names to records")
        for name, cam in info["cams"].items():
            _check_keys(path, i, f"cams.{name}", cam, _CAMERA_KEYS)
            _check_types(path, i, f"cams.{name}.", cam, _CAMERA_TYPES)
            if cam["width"] < 1 or cam["height"] < 1:
                raise InputError(f"info file {path}: record {i} cams.{name} has a bad image size "
                                 f"{cam['width']}x{cam['height']}")
        matrices = {"lidar2ego": info["lidar2ego"], "ego2global": info["ego2global"]}
        matrices.update({f"sweeps[{j}].sensor2lidar": s.get("sensor2lidar") for j, s in enumerate(info["sweeps"])})
        for name, cam in info["cams"].items():
            matrices.update({f"cams.{name}.{k}": cam.get(k) for k in ("camera2ego", "camera2lidar", "ego2global")})
            _check_matrix(path, i, f"cams.{name}.intrinsics", cam.get("intrinsics"), (3, 3))
        for name, value in matrices.items():
            _check_matrix(path, i, name, value, (4, 4))
        for name, cam in info["cams"].items():
            k = np.asarray(cam["intrinsics"], dtype=np.float64)
            if not (k[0, 0] > 0 and k[1, 1] > 0):
                raise InputError(f"info file {path}: record {i} cams.{name}.intrinsics has focal lengths "
                                 f"fx={k[0, 0]}, fy={k[1, 1]} (need > 0)")
    if dataroot is not None and not allow_outside_dataroot:
        _check_inside(path, infos, Path(dataroot))
    return infos


_NUMBER = (int, float)
_RECORD_TYPES = {"token": str, "scene_name": str, "timestamp": int, "location": str, "lidar_path": str}
_SWEEP_TYPES = {"path": str, "timestamp": int, "time_lag": _NUMBER}
_CAMERA_TYPES = {"path": str, "width": int, "height": int}
_TYPE_NAMES = {str: "a string", int: "an integer", _NUMBER: "a number"}


def _check_types(path: Path, index: int, prefix: str, record: dict[str, Any], types: dict[str, Any]) -> None:
    for key, kind in types.items():
        value = record.get(key)
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and kind is _NUMBER:
            ok = bool(np.isfinite(value))
        if key in record and not ok:
            raise InputError(f"info file {path}: record {index} {prefix}{key} must be {_TYPE_NAMES[kind]}, got {value!r}")


def data_paths(info: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, path) of every file an info record points to (keyframe LiDAR, sweeps, cameras)."""
    out = [("lidar_path", info["lidar_path"])]
    out += [(f"sweeps[{j}].path", s["path"]) for j, s in enumerate(info["sweeps"])]
    out += [(f"cams.{name}.path", c["path"]) for name, c in info["cams"].items()]
    return out


def _check_inside(path: Path, infos: list[dict[str, Any]], dataroot: Path) -> None:
    """Lexical check (absolute paths and ``..`` escapes); symlinks the dataroot holds are its owner's choice."""
    for i, info in enumerate(infos):
        for name, rel in data_paths(info):
            norm = os.path.normpath(rel)
            if os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep):
                raise InputError(
                    f"info file {path}: record {i} {name} {rel!r} lies outside the dataroot {dataroot} "
                    "(allow_outside_dataroot=True to accept it)")


def _check_keys(path: Path, index: int, name: str, value: Any, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        raise InputError(f"info file {path}: record {index} {name} lacks {missing}")


def _check_matrix(path: Path, index: int, name: str, value: Any, shape: tuple[int, int]) -> None:
    try:
        m = np.asarray(value)
        m = m.astype(np.float64) if m.dtype.kind in "iuf" else np.zeros(0)  # strings are not numbers
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
