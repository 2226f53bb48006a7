"""Foxglove message schemas (JSON encoding) for the replay output MCAP.

Foxglove Studio reads JSON-encoded MCAP channels whose schema name is a Foxglove schema
(``foxglove.Grid``, ``foxglove.CompressedImage``); ``bytes`` fields are base64 strings in JSON.
The schemas below declare the fields we write, following the published Foxglove message
definitions:

* ``foxglove.Grid``: a 2-D grid in ``frame_id``; ``pose`` places the corner of cell (0, 0);
  columns run along the grid frame's +x, rows along +y; each cell holds the listed ``fields`` at
  byte ``offset`` with a ``NumericType`` (UINT8 = 1, FLOAT32 = 7).
* ``foxglove.CompressedImage``: a PNG/JPEG image.
* ``bev_ddp.ReplayFrame``: our per-frame record (latency, steps, flags, occupancy).

Transforms go out as protobuf ``foxglove.FrameTransform`` (the classes of
``foxglove-schemas-protobuf``, :func:`frame_transform`), so Foxglove places the grids in the
world frame without any setup.
"""
from __future__ import annotations

import base64
import json

import numpy as np

UINT8 = 1
FLOAT32 = 7

_TIME = {
    "type": "object",
    "properties": {"sec": {"type": "integer", "minimum": 0}, "nsec": {"type": "integer", "minimum": 0}},
}
_VECTOR3 = {"type": "object", "properties": {k: {"type": "number"} for k in ("x", "y", "z")}}
_QUATERNION = {"type": "object", "properties": {k: {"type": "number"} for k in ("x", "y", "z", "w")}}
_BYTES = {"type": "string", "contentEncoding": "base64"}

GRID_SCHEMA = {
    "title": "foxglove.Grid",
    "description": "A 2D grid of data",
    "type": "object",
    "properties": {
        "timestamp": _TIME,
        "frame_id": {"type": "string"},
        "pose": {"type": "object", "properties": {"position": _VECTOR3, "orientation": _QUATERNION}},
        "column_count": {"type": "integer", "minimum": 0},
        "cell_size": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}},
        "row_stride": {"type": "integer", "minimum": 0},
        "cell_stride": {"type": "integer", "minimum": 0},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "offset": {"type": "integer", "minimum": 0},
                    "type": {"type": "integer", "description": "foxglove.NumericType"},
                },
            },
        },
        "data": _BYTES,
    },
}

COMPRESSED_IMAGE_SCHEMA = {
    "title": "foxglove.CompressedImage",
    "description": "A compressed image",
    "type": "object",
    "properties": {"timestamp": _TIME, "frame_id": {"type": "string"}, "data": _BYTES, "format": {"type": "string"}},
}

REPLAY_FRAME_SCHEMA = {
    "title": "bev_ddp.ReplayFrame",
    "description": "One replayed LiDAR frame: timing, sampling steps, degradation flags and map occupancy",
    "type": "object",
    "properties": {
        "timestamp": _TIME,
        "index": {"type": "integer"},
        "latency_ms": {"type": ["number", "null"]},
        "steps": {"type": ["integer", "null"]},
        "flags": {"type": "array", "items": {"type": "string"}},
        "camera_valid": {"type": "object"},
        "occupied_fraction": {"type": "object"},
        "mean_uncertainty": {"type": ["number", "null"]},
        "sweeps": {"type": "integer"},
    },
}


def time_fields(stamp_ns: int) -> dict:
    return {"sec": int(stamp_ns // 1_000_000_000), "nsec": int(stamp_ns % 1_000_000_000)}


def encode_json(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def grid_message(
    stamp_ns: int,
    frame_id: str,
    values: np.ndarray,
    names: list[str],
    *,
    origin_xy: tuple[float, float],
    cell_size: tuple[float, float],
) -> dict:
    """A ``foxglove.Grid`` of uint8 values.

    Args:
        values: uint8 [C, X, Y] (BEV layout: axis 1 along the frame's x, axis 2 along y).
        names: C field names.
        origin_xy: (x, y) in metres of the outer corner of cell (0, 0) in ``frame_id``.
        cell_size: (dx, dy) metres.
    """
    if values.dtype != np.uint8 or values.ndim != 3 or values.shape[0] != len(names):
        raise ValueError(f"grid values must be uint8 [C={len(names)}, X, Y], got {values.dtype} {values.shape}")
    channels, size_x, _ = values.shape
    cells = np.ascontiguousarray(values.transpose(2, 1, 0))  # [Y, X, C]: rows along y, columns along x
    return {
        "timestamp": time_fields(stamp_ns),
        "frame_id": frame_id,
        "pose": {"position": {"x": origin_xy[0], "y": origin_xy[1], "z": 0.0},
                 "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
        "column_count": int(size_x),
        "cell_size": {"x": float(cell_size[0]), "y": float(cell_size[1])},
        "row_stride": int(size_x * channels),
        "cell_stride": int(channels),
        "fields": [{"name": n, "offset": i, "type": UINT8} for i, n in enumerate(names)],
        "data": base64.b64encode(cells.tobytes()).decode("ascii"),
    }


def grid_values(message: dict) -> dict[str, np.ndarray]:
    """Inverse of :func:`grid_message` for uint8 grids: field name → uint8 [X, Y]."""
    raw = np.frombuffer(base64.b64decode(message["data"]), dtype=np.uint8)
    columns, stride = message["column_count"], message["cell_stride"]
    cells = raw.reshape(-1, columns, stride)  # [Y, X, C]
    return {f["name"]: cells[:, :, f["offset"]].T.copy() for f in message["fields"]}


def compressed_image_message(stamp_ns: int, frame_id: str, png: bytes) -> dict:
    return {
        "timestamp": time_fields(stamp_ns),
        "frame_id": frame_id,
        "data": base64.b64encode(png).decode("ascii"),
        "format": "png",
    }


def timestamp(stamp_ns: int):
    """Integer nanoseconds → ``google.protobuf.Timestamp``."""
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=int(stamp_ns // 1_000_000_000), nanos=int(stamp_ns % 1_000_000_000))


def frame_transform(parent: str, child: str, stamp_ns: int, child_to_parent: np.ndarray):
    """float64 [4, 4] child → parent as a protobuf ``foxglove.FrameTransform``."""
    from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
    from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
    from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(child_to_parent[:3, :3]).as_quat()
    t = child_to_parent[:3, 3]
    return FrameTransform(timestamp=timestamp(stamp_ns), parent_frame_id=parent, child_frame_id=child,
                          translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                          rotation=Quaternion(x=float(x), y=float(y), z=float(z), w=float(w)))
