"""Convert decoded Foxglove protobuf messages (``foxglove.*`` schemas) to numpy arrays.

The messages are the objects ``mcap_protobuf``'s decoder builds from the schemas embedded in the
MCAP file, so any version of the Foxglove schemas that keeps these field names is read:

* ``foxglove.PointCloud``: ``fields`` (name, byte offset, ``NumericType``), ``point_stride``,
  ``data`` and an optional ``pose`` of the cloud origin in ``frame_id``;
* ``foxglove.CompressedImage`` (``format`` jpeg/png) and ``foxglove.RawImage`` (``encoding``,
  ``step``), the same fields as the ROS messages;
* ``foxglove.CameraCalibration``: ``K`` and ``P`` row-major, ``width``, ``height``;
* ``foxglove.FrameTransform``: ``parent_frame_id``, ``child_frame_id``, ``translation``,
  ``rotation`` (child → parent, as tf2); ``foxglove.FrameTransforms`` holds a list of them.

Times are ``google.protobuf.Timestamp`` (seconds, nanos) → integer nanoseconds.
"""
from __future__ import annotations

import numpy as np

from bev_ddp.errors import InputError
from bev_ddp.replay import ros_messages

# foxglove.PackedElementField.NumericType -> numpy scalar type
NUMERIC_TYPES = {
    1: np.uint8,
    2: np.int8,
    3: np.uint16,
    4: np.int16,
    5: np.uint32,
    6: np.int32,
    7: np.float32,
    8: np.float64,
}

POINT_CLOUD = "foxglove.PointCloud"
COMPRESSED_IMAGE = "foxglove.CompressedImage"
RAW_IMAGE = "foxglove.RawImage"
CAMERA_CALIBRATION = "foxglove.CameraCalibration"
FRAME_TRANSFORM = "foxglove.FrameTransform"
FRAME_TRANSFORMS = "foxglove.FrameTransforms"
IMAGE_SCHEMAS = (COMPRESSED_IMAGE, RAW_IMAGE)


def stamp_ns(timestamp) -> int:
    """``google.protobuf.Timestamp`` → integer nanoseconds."""
    return int(timestamp.seconds) * 1_000_000_000 + int(timestamp.nanos)


def pose_to_matrix(pose) -> np.ndarray:
    """``foxglove.Pose`` → float64 [4, 4]; an unset orientation is the identity."""
    matrix = np.eye(4)
    if pose.HasField("orientation"):
        matrix[:3, :3] = ros_messages.quaternion_to_rotation(pose.orientation)
    if pose.HasField("position"):
        matrix[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
    return matrix


def point_cloud_to_points(msg, *, name: str = POINT_CLOUD) -> np.ndarray:
    """``foxglove.PointCloud`` → float32 [N, 4] (x, y, z m, intensity) in ``msg.frame_id``.

    Extra fields (``ring``, ...) are ignored; a ``pose`` other than the identity is applied.

    Raises:
        InputError: missing x/y/z, unknown numeric types, or data that is not whole points.
    """
    fields = {f.name: (int(f.type), int(f.offset)) for f in msg.fields}
    data = np.frombuffer(msg.data, dtype=np.uint8)
    points = ros_messages.packed_points(data, fields, int(msg.point_stride), NUMERIC_TYPES, name=name)
    if msg.HasField("pose"):
        origin = pose_to_matrix(msg.pose)  # cloud origin -> frame_id
        if not np.allclose(origin, np.eye(4)):
            points[:, :3] = (points[:, :3].astype(np.float64) @ origin[:3, :3].T + origin[:3, 3]).astype(np.float32)
    return points


def camera_calibration_to_intrinsics(msg, *, name: str = CAMERA_CALIBRATION) -> tuple[np.ndarray, tuple[int, int]]:
    """``foxglove.CameraCalibration`` → (K float64 [3, 3] in pixels, (height, width)).

    Uses the projection ``P`` when it is set (rectified images), else ``K``.

    Raises:
        InputError: neither ``P`` nor ``K`` has a positive focal length.
    """
    p = np.asarray(msg.P, dtype=np.float64)
    k = np.asarray(msg.K, dtype=np.float64)
    if p.size == 12 and p[0] > 0 and p[5] > 0:
        intrinsics = p.reshape(3, 4)[:, :3]
    elif k.size == 9:
        intrinsics = k.reshape(3, 3)
    else:
        raise InputError(f"{name}: calibration has neither a 3×4 P nor a 3×3 K (P {p.size}, K {k.size} values)")
    return ros_messages.checked_intrinsics(intrinsics, name=name), (int(msg.height), int(msg.width))


def frame_transform_to_matrix(msg, *, name: str = FRAME_TRANSFORM) -> np.ndarray:
    """``foxglove.FrameTransform`` → float64 [4, 4] child → parent; an unset rotation is the identity."""
    matrix = np.eye(4)
    try:
        if msg.HasField("rotation"):
            matrix[:3, :3] = ros_messages.quaternion_to_rotation(msg.rotation)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from exc
    if msg.HasField("translation"):
        matrix[:3, 3] = (msg.translation.x, msg.translation.y, msg.translation.z)
    return matrix


def image_to_rgb(schema: str, msg, *, name: str) -> np.ndarray:
    """``foxglove.CompressedImage`` / ``foxglove.RawImage`` → uint8 [H, W, 3] RGB.

    Raises:
        InputError: undecodable payload or unsupported raw encoding.
    """
    if schema == COMPRESSED_IMAGE:
        return ros_messages.compressed_image_to_rgb(msg, name=name)
    return ros_messages.image_to_rgb(msg, name=name)
