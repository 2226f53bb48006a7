"""What a log source yields: sensor messages in the order they were recorded.

Every source (:mod:`bev_ddp.replay.bag_source`, :mod:`bev_ddp.replay.nuscenes_source`) turns its
log into a stream of these events ordered by ``receive_ns`` (the recording time); the frame
assembler (:mod:`bev_ddp.replay.sync`) only sees events.  Stamps are integer nanoseconds of the
sensor clock (``header.stamp``), ``receive_ns`` the time the log recorded the message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np


@dataclass
class LidarMessage:
    """One LiDAR sweep.  ``points`` float32 [N, 4] (x, y, z m, intensity) in ``frame_id``;
    ``None`` with ``error`` set when the payload could not be decoded."""

    stamp_ns: int
    receive_ns: int
    frame_id: str
    points: np.ndarray | None
    error: str | None = None
    meta: dict = field(default_factory=dict)  # source-specific ids (e.g. nuScenes tokens)


@dataclass
class CameraMessage:
    """One camera image; ``decode()`` returns uint8 [H, W, 3] RGB or raises ``InputError``
    (decoding is deferred so only the images a frame uses are decompressed)."""

    camera: str
    stamp_ns: int
    receive_ns: int
    frame_id: str
    decode: Callable[[], np.ndarray]


@dataclass
class CameraInfoMessage:
    """Pinhole intrinsics of one camera: ``intrinsics`` float64 [3, 3] in pixels of an image of
    ``size`` (height, width)."""

    camera: str
    receive_ns: int
    intrinsics: np.ndarray
    size: tuple[int, int]


@dataclass
class TransformMessage:
    """``child_to_parent`` float64 [4, 4]; ``static`` for ``/tf_static`` (valid at all times)."""

    parent: str
    child: str
    stamp_ns: int
    receive_ns: int
    child_to_parent: np.ndarray
    static: bool


@dataclass
class CorruptMessage:
    """A message of a known sensor topic whose payload could not be deserialised."""

    topic: str
    sensor: str  # "lidar", a camera name, "camera_info:<camera>", "tf"
    receive_ns: int
    error: str


@dataclass
class LogError:
    """The log could not be read past this point (truncated or corrupt storage); always last."""

    receive_ns: int
    error: str


Event = Union[LidarMessage, CameraMessage, CameraInfoMessage, TransformMessage, CorruptMessage, LogError]
