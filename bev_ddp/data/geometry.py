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


# ------------------------------------------------------------------------------ validation
RIGID_TOLERANCE = 1e-3  # max |RᵀR − I| and |det R − 1| of a rotation stored as (float32) text


def _as_matrix(value: object, shape: tuple[int, int], name: str) -> np.ndarray:
    try:
        m = np.asarray(value)
        m = m.astype(np.float64) if m.dtype.kind in "iuf" else np.zeros(0)  # strings are not numbers
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != shape or not np.isfinite(m).all():
        raise InputError(f"{name} must be a finite {shape[0]}x{shape[1]} matrix, got {_short(value)}")
    return m


def _short(value: object) -> str:
    text = repr(np.asarray(value).tolist()) if isinstance(value, np.ndarray) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def check_rigid(matrix: object, name: str, *, tolerance: float = RIGID_TOLERANCE) -> np.ndarray:
    """A [4, 4] rigid transform ``[R t; 0 0 0 1]`` (R a rotation: RᵀR = I, det R = +1, within
    ``tolerance``), as float64; anything else raises :class:`InputError` starting with ``name``.

    The one check of every 4×4 pose and calibration the data layer, ``prepare``, replay and the
    Python API accept (a scaled, sheared, mirrored or singular "transform" is refused).
    """
    m = _as_matrix(matrix, (4, 4), name)
    rotation = m[:3, :3]
    orthogonal = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    det = float(np.linalg.det(rotation))
    bottom = float(np.abs(m[3] - np.array([0.0, 0.0, 0.0, 1.0])).max())
    if orthogonal > tolerance or abs(det - 1.0) > tolerance or bottom > tolerance:
        raise InputError(f"{name} is not a rigid transform [R t; 0 0 0 1] (|RᵀR − I| = {orthogonal:.3g}, "
                         f"det R = {det:.3g}, last row {m[3].tolist()}; tolerance {tolerance})")
    return m


def check_rigid_all(named: dict[str, object], *, tolerance: float = RIGID_TOLERANCE) -> None:
    """:func:`check_rigid` of every ``{name: matrix}`` at once (vectorised: an info file holds about
    30 per record); the error, if any, is the one :func:`check_rigid` gives for the first bad matrix."""
    try:
        stack = np.asarray(list(named.values()), dtype=np.float64)  # [N, 4, 4]
    except (TypeError, ValueError):
        stack = np.zeros(0)
    if stack.shape == (len(named), 4, 4) and np.isfinite(stack).all():
        rotation = stack[:, :3, :3]
        orthogonal = np.abs(rotation.transpose(0, 2, 1) @ rotation - np.eye(3)).max(axis=(1, 2))  # [N]
        det = np.linalg.det(rotation)
        bottom = np.abs(stack[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1)
        if (orthogonal <= tolerance).all() and (np.abs(det - 1.0) <= tolerance).all() and (bottom <= tolerance).all():
            return
    for name, matrix in named.items():  # something is wrong: name the first bad matrix
        check_rigid(matrix, name, tolerance=tolerance)


def check_intrinsics(matrix: object, name: str) -> np.ndarray:
    """A [3, 3] pinhole camera matrix (pixels) with positive focal lengths that can be inverted, as
    float64; anything else raises :class:`InputError` starting with ``name``."""
    k = _as_matrix(matrix, (3, 3), name)
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise InputError(f"{name} has focal lengths fx={k[0, 0]}, fy={k[1, 1]} (need > 0)")
    if abs(np.linalg.det(k)) <= 1e-9 * k[0, 0] * k[1, 1]:
        raise InputError(f"{name} is singular (its last row must be [0, 0, 1]), got {k.tolist()}")
    return k


def check_invertible(matrix: object, name: str) -> np.ndarray:
    """A finite, well-conditioned [4, 4] matrix (an augmentation: rotation, scale, flip, crop), as
    float64; a singular or non-finite one raises :class:`InputError` starting with ``name``."""
    m = _as_matrix(matrix, (4, 4), name)
    if np.linalg.cond(m) > 1e12:
        raise InputError(f"{name} is singular (cannot be inverted), got {m.tolist()}")
    return m
