"""Reading and writing nuScenes LiDAR files (``.pcd.bin``: float32 records, little endian).

A nuScenes LiDAR file stores one record per point: ``x, y, z`` (m, sensor frame), ``intensity``
(0–255) and ``ring`` (laser index).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bev_ddp.errors import InputError
from bev_ddp.output_files import write_bytes_atomic

NUSCENES_POINT_DIMS = 5
POINT_COLUMNS = ("x", "y", "z", "intensity", "ring")  # of a nuScenes file; samples hold a time lag (s) fifth
MAX_POINT_VALUE = 1e6  # |m|, intensity, s: anything larger is corrupt, and sums of it overflow float32


def check_point_values(points: np.ndarray, name: str, columns: tuple[str, ...] = POINT_COLUMNS) -> np.ndarray:
    """Refuse points holding NaN, inf or values beyond ±:data:`MAX_POINT_VALUE`: :class:`InputError`
    naming ``name`` and the first bad column (x, y, z, intensity, ...)."""
    bad = ~np.isfinite(points) | (np.abs(points) > MAX_POINT_VALUE)  # [N, dims]
    if bad.any():
        column = int(np.nonzero(bad.any(axis=0))[0][0])
        label = columns[column] if column < len(columns) else f"column {column}"
        values = points[:, column][bad[:, column]]
        raise InputError(f"{name} holds {int(bad[:, column].sum())} point(s) whose {label} is NaN, inf or beyond "
                         f"±{MAX_POINT_VALUE:g} (e.g. {float(values[0]):g})")
    return points


def load_points(path: str | os.PathLike, dims: int = NUSCENES_POINT_DIMS) -> np.ndarray:
    """Read a ``.pcd.bin`` file into a float32 [N, dims] array.

    Raises:
        InputError: naming ``path`` when it is missing, empty, truncated (size not a multiple of
            ``dims * 4`` bytes) or holds NaN, inf or absurd values (:func:`check_point_values`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"LiDAR file not found: {path}")
    size = path.stat().st_size
    record = dims * 4
    if size == 0:
        raise InputError(f"LiDAR file {path} is empty (0 bytes)")
    if size % record:
        raise InputError(
            f"LiDAR file {path} is truncated or not a {dims}-float32 point file: "
            f"{size} bytes is not a multiple of {record}"
        )
    points = np.fromfile(path, dtype="<f4").reshape(-1, dims)  # [N, dims]
    return check_point_values(points, f"LiDAR file {path}")


def write_points(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write a [N, 5] array as a nuScenes ``.pcd.bin`` file (float32, little endian)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != NUSCENES_POINT_DIMS:
        raise InputError(f"points must be [N, {NUSCENES_POINT_DIMS}], got {points.shape}")
    write_bytes_atomic(path, points.astype("<f4").tobytes(), fsync=False)
