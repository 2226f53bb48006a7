"""Rigid transforms of nuScenes records (quaternions are ``[w, x, y, z]``, metres) and grid axes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pyquaternion import Quaternion

from bev_ddp.errors import InputError


@dataclass(frozen=True)
class Bound:
    """An axis of a regular grid: cells of ``step`` metres from ``lower`` to ``upper``."""

    lower: float
    upper: float
    step: float

    @property
    def cells(self) -> int:
        return int(round((self.upper - self.lower) / self.step))

    @staticmethod
    def of(values: Sequence[float]) -> "Bound":
        """From ``[lower, upper, step]`` (config lists such as ``xbound``); bad bounds raise :class:`InputError`."""
        lower, upper, step = (float(v) for v in values)
        if step <= 0 or upper <= lower:
            raise InputError(f"grid bound must be (lower, upper, step) with upper > lower and step > 0, got {values}")
        return Bound(lower, upper, step)


def transform_matrix(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """[4, 4] float64 homogeneous transform from a translation (m) and a ``[w, x, y, z]`` quaternion."""
    out = np.eye(4)
    out[:3, :3] = Quaternion(list(rotation)).rotation_matrix
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


def record_to_matrix(record: dict) -> np.ndarray:
    """[4, 4] transform of a ``calibrated_sensor`` (sensor → ego) or ``ego_pose`` (ego → global) record."""
    return transform_matrix(record["translation"], record["rotation"])


def yaw_rotation(yaw: float) -> np.ndarray:
    """[3, 3] rotation about +z by ``yaw`` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def matrix_to_quaternion(rotation: np.ndarray) -> list[float]:
    """``[w, x, y, z]`` of a [3, 3] rotation matrix (as stored in nuScenes tables)."""
    q = Quaternion(matrix=np.asarray(rotation, dtype=np.float64), atol=1e-6)
    return [float(q.w), float(q.x), float(q.y), float(q.z)]


def heading_yaw(transform: np.ndarray) -> float:
    """Yaw (radians, about +z) of the x axis of a frame given by its [4, 4] frame → world transform."""
    x_axis = transform[:3, :3] @ np.array([1.0, 0.0, 0.0])
    return float(np.arctan2(x_axis[1], x_axis[0]))


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a [4, 4] transform to [N, 3] points."""
    return points @ transform[:3, :3].T + transform[:3, 3]
