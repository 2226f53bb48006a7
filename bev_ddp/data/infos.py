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

Paths are relative to the dataroot.  mmdet3d / BEVFusion ``.pkl`` infos are converted by
:mod:`bev_ddp.data.info_import`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bev_ddp.data.geometry import check_intrinsics, check_rigid_all
from bev_ddp.errors import InputError
from bev_ddp.files import read_json
from bev_ddp.output_files import write_text_atomic

INFO_FORMAT = "bev_ddp.infos/1"
_SWEEP_KEYS = ("path", "timestamp", "time_lag", "sensor2lidar")
_CAMERA_KEYS = ("path", "width", "height", "intrinsics", "camera2ego", "camera2lidar", "ego2global")
_REQUIRED = ("token", "scene_name", "timestamp", "location", "lidar_path", "lidar2ego", "ego2global", "sweeps", "cams")


def write_infos(path: str | Path, metadata: dict[str, Any], infos: list[dict[str, Any]], *,
                source: str | Path | None = None) -> Path:
    """Write an info file (atomically) after checking every record as :func:`read_infos` does;
    errors name ``source`` (the file the records came from, e.g. a BEVFusion .pkl) or ``path``."""
    path = Path(path)
    check_infos(source or path, infos)
    return write_text_atomic(path, json.dumps({"metadata": metadata, "infos": infos}))


def read_infos(path: str | Path, *, dataroot: str | Path | None = None,
               allow_outside_dataroot: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metadata, infos) of an info JSON file; malformed files raise :class:`InputError` naming it.

    Every record is checked (:func:`check_record`).  With ``dataroot``, every data path must resolve
    inside it (no absolute paths, no ``..`` escaping it) unless ``allow_outside_dataroot``.
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
    with ``dataroot``, every data path must resolve inside it unless ``allow_outside_dataroot``.
    Returns the records unchanged."""
    check_infos(source, infos)
    if dataroot is not None and not allow_outside_dataroot:
        _check_inside(Path(source), infos, Path(dataroot))
    return infos


def check_infos(path: str | Path, infos: list[dict[str, Any]]) -> None:
    """Check every record of ``infos`` (:func:`check_record`); the first bad value raises
    :class:`InputError` naming ``path``, the record and the key."""
    for i, info in enumerate(infos):
        check_record(info, f"info file {path}: record {i}")


def check_record(info: Any, where: str) -> None:
    """Check one info record: keys, types, image sizes, rigid 4×4 transforms and invertible camera
    matrices with positive focal lengths (:mod:`bev_ddp.data.geometry`); :class:`InputError`
    starting with ``where`` (e.g. ``info file F: record 3``) otherwise."""
    missing = [k for k in _REQUIRED if not isinstance(info, dict) or k not in info]
    if missing:
        raise InputError(f"{where} lacks {missing}")
    _check_types(where, "", info, _RECORD_TYPES)
    if not isinstance(info["sweeps"], list):
        raise InputError(f"{where} 'sweeps' must be a list")
    for j, sweep in enumerate(info["sweeps"]):
        _check_keys(where, f"sweeps[{j}]", sweep, _SWEEP_KEYS)
        _check_types(where, f"sweeps[{j}].", sweep, _SWEEP_TYPES)
    if not isinstance(info["cams"], dict):
        raise InputError(f"{where} 'cams' must map camera names to records")
    for name, cam in info["cams"].items():
        _check_keys(where, f"cams.{name}", cam, _CAMERA_KEYS)
        _check_types(where, f"cams.{name}.", cam, _CAMERA_TYPES)
        if cam["width"] < 1 or cam["height"] < 1:
            raise InputError(f"{where} cams.{name} has a bad image size {cam['width']}x{cam['height']}")
    matrices = {"lidar2ego": info["lidar2ego"], "ego2global": info["ego2global"]}
    matrices.update({f"sweeps[{j}].sensor2lidar": s.get("sensor2lidar") for j, s in enumerate(info["sweeps"])})
    for name, cam in info["cams"].items():
        matrices.update({f"cams.{name}.{k}": cam.get(k) for k in ("camera2ego", "camera2lidar", "ego2global")})
        check_intrinsics(cam.get("intrinsics"), f"{where} cams.{name}.intrinsics")
    check_rigid_all({f"{where} {name}": value for name, value in matrices.items()})


_NUMBER = (int, float)
_RECORD_TYPES = {"token": str, "scene_name": str, "timestamp": int, "location": str, "lidar_path": str}
_SWEEP_TYPES = {"path": str, "timestamp": int, "time_lag": _NUMBER}
_CAMERA_TYPES = {"path": str, "width": int, "height": int}
_TYPE_NAMES = {str: "a string", int: "an integer", _NUMBER: "a number"}


def _check_types(where: str, prefix: str, record: dict[str, Any], types: dict[str, Any]) -> None:
    for key, kind in types.items():
        value = record.get(key)
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and kind is _NUMBER:
            ok = bool(np.isfinite(value))
        if key in record and not ok:
            raise InputError(f"{where} {prefix}{key} must be {_TYPE_NAMES[kind]}, got {value!r}")


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


def _check_keys(where: str, name: str, value: Any, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        raise InputError(f"{where} {name} lacks {missing}")
