"""Write a nuScenes scene as a ROS 2 bag or MCAP file (for tests, demos and tool checks).

The messages follow the topic map (default nuScenes-style names): ``sensor_msgs/PointCloud2``
with float32 x, y, z, intensity; ``sensor_msgs/CompressedImage`` holding the scene's original
JPEG bytes; ``sensor_msgs/CameraInfo``; ``/tf_static`` (base → sensors) and ``/tf``
(world → base per ego pose).  Messages are built with the ``rosbags`` type store and written
with the libraries' own writers: ``rosbags.rosbag2.Writer`` (sqlite3 or MCAP storage) or
``mcap_ros2.writer.Writer`` (a plain ``.mcap`` file).

``camera_delay_ns`` records every camera message that much after its stamp, to exercise late
arrivals; ``drop`` leaves out chosen messages (topic, index) to exercise missing ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from bev_ddp.data.geometry import record_to_matrix
from bev_ddp.data.lidar_io import load_points
from bev_ddp.data.sensors import CAMERA_NAMES, LIDAR_NAME
from bev_ddp.replay.nuscenes_source import NuScenesSceneSource
from bev_ddp.replay.topics import TopicMap

_TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
_T = _TYPESTORE.types

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


@dataclass
class OutgoingMessage:
    topic: str
    msgtype: str
    log_ns: int
    message: object


def _time(stamp_ns: int):
    return _T["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _header(stamp_ns: int, frame_id: str):
    return _T["std_msgs/msg/Header"](stamp=_time(stamp_ns), frame_id=frame_id)


def pointcloud2(points: np.ndarray, stamp_ns: int, frame_id: str):
    """float32 [N, 4] (x, y, z, intensity) → ``sensor_msgs/PointCloud2``."""
    field = _T["sensor_msgs/msg/PointField"]
    points = np.ascontiguousarray(points[:, :4], dtype="<f4")
    fields = [field(name=n, offset=4 * i, datatype=field.FLOAT32, count=1) for i, n in enumerate(("x", "y", "z", "intensity"))]
    return _T[POINTCLOUD2](
        header=_header(stamp_ns, frame_id), height=1, width=len(points), fields=fields, is_bigendian=False,
        point_step=16, row_step=16 * len(points), data=points.view(np.uint8).reshape(-1), is_dense=True,
    )


def compressed_image(jpeg: bytes, stamp_ns: int, frame_id: str):
    return _T[COMPRESSED_IMAGE](header=_header(stamp_ns, frame_id), format="jpeg",
                                data=np.frombuffer(jpeg, dtype=np.uint8))


def camera_info(intrinsics: np.ndarray, size: tuple[int, int], stamp_ns: int, frame_id: str):
    k = np.asarray(intrinsics, dtype=np.float64)
    p = np.concatenate([k, np.zeros((3, 1))], axis=1)
    roi = _T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _T[CAMERA_INFO](
        header=_header(stamp_ns, frame_id), height=int(size[0]), width=int(size[1]), distortion_model="plumb_bob",
        d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi,
    )


def tf_message(transforms: list[tuple[str, str, int, np.ndarray]]):
    """[(parent, child, stamp_ns, child→parent [4, 4])] → ``tf2_msgs/TFMessage``."""
    out = []
    for parent, child, stamp_ns, matrix in transforms:
        x, y, z, w = Rotation.from_matrix(matrix[:3, :3]).as_quat()
        t = matrix[:3, 3]
        transform = _T["geometry_msgs/msg/Transform"](
            translation=_T["geometry_msgs/msg/Vector3"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
            rotation=_T["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)),
        )
        out.append(_T["geometry_msgs/msg/TransformStamped"](header=_header(stamp_ns, parent), child_frame_id=child,
                                                              transform=transform))
    return _T[TF_MESSAGE](transforms=out)


def scene_messages(
    source: NuScenesSceneSource,
    topics: TopicMap,
    *,
    camera_delay_ns: int = 0,
    with_tf: bool = True,
    drop: frozenset[tuple[str, int]] = frozenset(),
) -> list[OutgoingMessage]:
    """The scene's messages in recording order (see the module docstring)."""
    nusc = source.nusc
    records = source.records.channels
    cams = {c.name: c for c in topics.cameras}
    lidar_frame = topics.lidar_frame or LIDAR_NAME
    frame_of = {LIDAR_NAME: lidar_frame, **{n: (cams[n].frame_id or n) for n in CAMERA_NAMES}}
    all_records = [(r, ch) for ch, chain in records.items() for r in chain]
    t0 = min(r["timestamp"] for r, _ in all_records) * 1000
    out: list[OutgoingMessage] = []
    if with_tf:
        static = []
        for channel, chain in records.items():
            if chain:
                calib = nusc.get("calibrated_sensor", chain[0]["calibrated_sensor_token"])
                static.append((topics.base_frame, frame_of[channel], t0, record_to_matrix(calib)))
        out.append(OutgoingMessage(topics.tf_static, TF_MESSAGE, t0, tf_message(static)))
    for channel in CAMERA_NAMES:
        if records[channel] and cams[channel].info:
            first = records[channel][0]
            calib = nusc.get("calibrated_sensor", first["calibrated_sensor_token"])
            info = camera_info(np.asarray(calib["camera_intrinsic"]), (first["height"], first["width"]), t0,
                               frame_of[channel])
            out.append(OutgoingMessage(cams[channel].info, CAMERA_INFO, t0, info))
    counters: dict[str, int] = {}
    for record, channel in sorted(all_records, key=lambda rc: rc[0]["timestamp"]):
        t = record["timestamp"] * 1000
        if with_tf:
            pose = nusc.get("ego_pose", record["ego_pose_token"])
            out.append(OutgoingMessage(topics.tf, TF_MESSAGE, t,
                                       tf_message([(topics.world_frame, topics.base_frame, pose["timestamp"] * 1000,
                                                    record_to_matrix(pose))])))
        path = source.dataroot / record["filename"]
        topic = topics.lidar_topic if channel == LIDAR_NAME else cams[channel].image
        index = counters.get(topic, 0)
        counters[topic] = index + 1
        if (topic, index) in drop:
            continue
        if channel == LIDAR_NAME:
            out.append(OutgoingMessage(topic, POINTCLOUD2, t, pointcloud2(load_points(path), t, frame_of[channel])))
        else:
            out.append(OutgoingMessage(topic, COMPRESSED_IMAGE, t + camera_delay_ns,
                                       compressed_image(path.read_bytes(), t, frame_of[channel])))
    out.sort(key=lambda m: m.log_ns)  # stable: keeps tf before the sensor message of the same stamp
    return out


def _serialised(messages: list[OutgoingMessage]) -> Iterator[tuple[OutgoingMessage, bytes]]:
    for m in messages:
        yield m, bytes(_TYPESTORE.serialize_cdr(m.message, m.msgtype))


def write_rosbag2(
    messages: list[OutgoingMessage], path: str | Path, *, storage: Literal["sqlite3", "mcap"] = "sqlite3"
) -> Path:
    """Write a rosbag2 directory with ``rosbags.rosbag2.Writer`` (the directory must not exist)."""
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    path = Path(path)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for m, raw in _serialised(messages):
            if m.topic not in connections:
                connections[m.topic] = writer.add_connection(m.topic, m.msgtype, typestore=_TYPESTORE)
            writer.write(connections[m.topic], m.log_ns, raw)
    return path


def write_mcap(messages: list[OutgoingMessage], path: str | Path, *, chunk_size: int = 1024 * 1024) -> Path:
    """Write a plain ``.mcap`` file (ROS 2 profile, CDR) with ``mcap_ros2.writer.Writer``.

    ``chunk_size`` (bytes) is the MCAP chunk size; smaller chunks lose less of a truncated file.
    """
    from mcap_ros2.writer import Writer as McapRos2Writer

    path = Path(path)
    with open(path, "wb") as stream:
        writer = McapRos2Writer(stream, chunk_size=chunk_size)
        schemas = {}
        for m in messages:
            if m.msgtype not in schemas:
                msgdef, _ = _TYPESTORE.generate_msgdef(m.msgtype, ros_version=2)
                schemas[m.msgtype] = writer.register_msgdef(m.msgtype, msgdef)
            writer.write_message(m.topic, schemas[m.msgtype], _as_plain(m.message), log_time=m.log_ns,
                                 publish_time=m.log_ns)
        writer.finish()
    return path


def _as_plain(message: object) -> object:
    """rosbags message → nested dicts / lists / bytes as ``mcap_ros2``'s encoder takes them."""
    if isinstance(message, np.ndarray):
        return message.tobytes() if message.dtype == np.uint8 else message.tolist()
    if hasattr(message, "__dataclass_fields__"):
        return {name: _as_plain(getattr(message, name)) for name in message.__dataclass_fields__}
    if isinstance(message, list):
        return [_as_plain(v) for v in message]
    return message
