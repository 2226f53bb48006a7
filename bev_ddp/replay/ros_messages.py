"""Convert deserialised ROS 2 messages (``rosbags`` objects) to numpy arrays.

Frames: point clouds stay in their sensor frame (``header.frame_id``); transforms are returned as
4×4 matrices mapping points of the *child* frame into the *parent* frame (the tf2 convention of
``TransformStamped``: parent = ``header.frame_id``).  Times are integer nanoseconds.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.spatial.transform import Rotation

from bev_ddp.data.geometry import check_intrinsics
from bev_ddp.data.lidar_io import check_point_values
from bev_ddp.errors import InputError

# sensor_msgs/PointField datatype constants -> numpy scalar type
_POINT_FIELD_TYPES = {
    1: np.int8,
    2: np.uint8,
    3: np.int16,
    4: np.uint16,
    5: np.int32,
    6: np.uint32,
    7: np.float32,
    8: np.float64,
}

# sensor_msgs/Image encodings -> (channels, numpy dtype, channel order to RGB)
_IMAGE_ENCODINGS = {
    "rgb8": (3, np.uint8, (0, 1, 2)),
    "bgr8": (3, np.uint8, (2, 1, 0)),
    "rgba8": (4, np.uint8, (0, 1, 2)),
    "bgra8": (4, np.uint8, (2, 1, 0)),
    "mono8": (1, np.uint8, (0, 0, 0)),
    "8uc1": (1, np.uint8, (0, 0, 0)),
    "8uc3": (3, np.uint8, (2, 1, 0)),  # OpenCV default channel order is BGR
}


def stamp_ns(header) -> int:
    """``std_msgs/Header`` stamp as integer nanoseconds; one before 1970 raises :class:`InputError`
    (the message is then corrupt: the MCAP output stores stamps unsigned)."""
    stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    if stamp < 0:
        raise InputError(f"header stamp {header.stamp.sec} s {header.stamp.nanosec} ns is before 1970")
    return stamp


def pointcloud2_to_points(msg, *, name: str = "PointCloud2") -> np.ndarray:
    """``sensor_msgs/PointCloud2`` → float32 [N, 4] (x, y, z, intensity) in the cloud's frame (m).

    Fields are read with their declared offsets and types, so any ``point_step`` and extra fields
    (ring, time, ...) work.  A cloud without ``intensity`` gets zeros.  Points with a non-finite
    coordinate are dropped (``is_dense`` false clouds mark missing returns with NaN); a non-finite
    intensity becomes 0.

    Raises:
        InputError: missing x/y/z fields, or a data buffer shorter than the header promises.
    """
    fields = {f.name: (int(f.datatype), int(f.offset)) for f in msg.fields}
    height, width, row_step, point_step = int(msg.height), int(msg.width), int(msg.row_step), int(msg.point_step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if row_step < width * point_step or data.size < height * row_step:
        raise InputError(
            f"{name}: data holds {data.size} bytes, header promises {height} rows × {row_step} bytes "
            f"({width} points of {point_step} bytes)"
        )
    rows = data[: height * row_step].reshape(height, row_step)[:, : width * point_step]  # [H, W*step]
    return packed_points(np.ascontiguousarray(rows).reshape(-1), fields, point_step, _POINT_FIELD_TYPES,
                         big_endian=bool(msg.is_bigendian), name=name)


def packed_points(data: np.ndarray, fields: dict[str, tuple[int, int]], point_step: int,
                  type_codes: dict[int, type], *, big_endian: bool = False, name: str = "cloud") -> np.ndarray:
    """Packed point records → float32 [N, 4] (x, y, z, intensity); shared by ROS and Foxglove clouds.

    Args:
        data: uint8 [N * point_step] bytes, one record per point.
        fields: field name → (type code, byte offset in the record).
        type_codes: type code → numpy scalar type (ROS ``PointField`` or Foxglove ``NumericType``).

    Non-finite points are dropped, a missing or non-finite intensity is 0.

    Raises:
        InputError: missing x/y/z, an unknown type code, records smaller than their fields, or a
            value beyond ±1e6 (:func:`bev_ddp.data.lidar_io.check_point_values`).
    """
    missing = [k for k in ("x", "y", "z") if k not in fields]
    if missing:
        raise InputError(f"{name}: point cloud has no field(s) {missing} (fields: {sorted(fields)})")
    endian = ">" if big_endian else "<"
    names, formats, offsets = [], [], []
    for key in ("x", "y", "z", "intensity"):
        if key not in fields:
            continue
        code, offset = fields[key]
        if code not in type_codes:
            raise InputError(f"{name}: field {key!r} has unknown numeric type {code}")
        names.append(key)
        formats.append(np.dtype(type_codes[code]).newbyteorder(endian))
        offsets.append(offset)
    if point_step <= 0 or max(o + np.dtype(t).itemsize for o, t in zip(offsets, formats)) > point_step:
        raise InputError(f"{name}: point stride {point_step} is smaller than its fields")
    if data.size % point_step:
        raise InputError(f"{name}: {data.size} bytes is not a whole number of {point_step}-byte points")
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    cloud = np.ascontiguousarray(data).view(dtype).reshape(-1)  # [N] structured
    points = np.zeros((cloud.size, 4), dtype=np.float32)  # [N, 4]
    for col, key in enumerate(("x", "y", "z", "intensity")):
        if key in names:
            points[:, col] = cloud[key]
    points[:, 3] = np.nan_to_num(points[:, 3], nan=0.0, posinf=0.0, neginf=0.0)  # intensity
    points = points[np.isfinite(points[:, :3]).all(axis=1)]
    return check_point_values(points, name, ("x", "y", "z", "intensity"))  # e.g. an intensity of 3e38


def image_to_rgb(msg, *, name: str = "Image") -> np.ndarray:
    """``sensor_msgs/Image`` → uint8 [H, W, 3] RGB.

    Raises:
        InputError: unsupported encoding or a buffer shorter than ``height × step``.
    """
    encoding = str(msg.encoding).lower()
    if encoding not in _IMAGE_ENCODINGS:
        raise InputError(f"{name}: unsupported image encoding {msg.encoding!r}; use one of {sorted(_IMAGE_ENCODINGS)}")
    channels, dtype, order = _IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, dtype=np.uint8) if isinstance(msg.data, bytes) else np.asarray(msg.data, np.uint8)
    if height <= 0 or width <= 0 or step < width * channels or data.size < height * step:
        raise InputError(f"{name}: {data.size} bytes cannot hold a {height}×{width} {encoding} image (step {step})")
    rows = data[: height * step].reshape(height, step)[:, : width * channels]  # [H, W*C]
    pixels = rows.reshape(height, width, channels)  # [H, W, C]
    return np.ascontiguousarray(pixels[:, :, list(order)])


def compressed_image_to_rgb(msg, *, name: str = "CompressedImage") -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG) → uint8 [H, W, 3] RGB, decoded with Pillow.

    Raises:
        InputError: the payload is not a decodable image.
    """
    try:
        with Image.open(io.BytesIO(bytes(msg.data))) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{name}: cannot decode {msg.format!r} image payload: {exc}") from exc


def camera_info_to_intrinsics(msg, *, name: str = "CameraInfo") -> tuple[np.ndarray, tuple[int, int]]:
    """``sensor_msgs/CameraInfo`` → (K float64 [3, 3] in pixels, (height, width)).

    Uses the rectified projection ``P`` when set (rectified images), else ``K``.
    """
    p = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    intrinsics = p[:, :3] if p[0, 0] > 0 and p[1, 1] > 0 else k
    return checked_intrinsics(intrinsics, name=name), (int(msg.height), int(msg.width))


def checked_intrinsics(intrinsics: np.ndarray, *, name: str) -> np.ndarray:
    """A copy of the [3, 3] camera matrix, or InputError naming ``name`` unless it passes
    :func:`bev_ddp.data.geometry.check_intrinsics` (finite, positive focal lengths, invertible)."""
    return check_intrinsics(intrinsics, f"{name}: camera matrix").copy()


def transform_to_matrix(transform) -> np.ndarray:
    """``geometry_msgs/Transform`` → float64 [4, 4] child → parent."""
    t = transform.translation
    try:
        rotation = quaternion_to_rotation(transform.rotation)
    except InputError as exc:
        raise InputError(f"transform has an {exc}") from exc
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = (t.x, t.y, t.z)
    return matrix


def quaternion_to_rotation(q) -> np.ndarray:
    """A quaternion message (fields ``x, y, z, w``; ROS and Foxglove alike) → float64 [3, 3], normalised."""
    quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    norm = np.linalg.norm(quat)
    if not np.isfinite(quat).all() or norm < 1e-9:
        raise InputError(f"invalid rotation quaternion {quat.tolist()}")
    return Rotation.from_quat(quat / norm).as_matrix()
