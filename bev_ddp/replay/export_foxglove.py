"""Write a nuScenes scene as an MCAP of Foxglove protobuf messages, in foxglove/nuscenes2mcap's layout.

The layout (read from that converter's output format; nothing of its code is used): empty MCAP
profile, protobuf ``foxglove.*`` messages only, lower-case topics and frame ids:

* ``/lidar_top``: ``foxglove.PointCloud`` in frame ``lidar_top``, the ``.pcd.bin`` records as
  they are (float32 x, y, z, intensity, ring; 20-byte stride);
* ``/cam_front/image_rect_compressed``: ``foxglove.CompressedImage`` (the JPEG bytes), and
  ``/cam_front/camera_info``: ``foxglove.CameraCalibration`` (K, R, P) with every image; the
  same for the five other cameras;
* ``/tf``: single ``foxglove.FrameTransform`` messages: ``map`` → ``base_link`` per ego pose and
  ``base_link`` → sensor at each keyframe (no ``/tf_static``).

Messages are logged at their own stamps.  The sensor mounts are also logged once at the start of
the recording, so LiDAR sweeps recorded before the first keyframe are placed too.  Written with
``foxglove-schemas-protobuf`` classes and ``mcap_protobuf``'s writer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud

from bev_ddp.data.sensors import LIDAR_NAME
from bev_ddp.replay.foxglove import frame_transform, timestamp
from bev_ddp.replay.nuscenes_source import NuScenesSceneSource

LIDAR_FIELDS = ("x", "y", "z", "intensity", "ring")  # float32 each, in file order


def point_cloud(records: bytes, stamp_ns: int, frame_id: str) -> PointCloud:
    """``.pcd.bin`` bytes (5 float32 per point) → ``foxglove.PointCloud``."""
    fields = [PackedElementField(name=n, offset=4 * i, type=PackedElementField.FLOAT32)
              for i, n in enumerate(LIDAR_FIELDS)]
    return PointCloud(timestamp=timestamp(stamp_ns), frame_id=frame_id, point_stride=4 * len(LIDAR_FIELDS),
                      fields=fields, data=records)


def camera_calibration(intrinsics: np.ndarray, size: tuple[int, int], stamp_ns: int, frame_id: str) -> CameraCalibration:
    """K [3, 3] pixels and (height, width) → ``foxglove.CameraCalibration`` (R identity, P = [K | 0])."""
    k = np.asarray(intrinsics, dtype=np.float64)
    p = np.concatenate([k, np.zeros((3, 1))], axis=1)
    return CameraCalibration(timestamp=timestamp(stamp_ns), frame_id=frame_id, height=int(size[0]),
                             width=int(size[1]), K=k.reshape(-1).tolist(), R=np.eye(3).reshape(-1).tolist(),
                             P=p.reshape(-1).tolist())


def scene_messages_foxglove(source: NuScenesSceneSource, *, world_frame: str = "map",
                            base_frame: str = "base_link") -> list[tuple[str, int, Any]]:
    """The scene's (topic, log time ns, protobuf message) in recording order (see the module docstring)."""
    from bev_ddp.data.geometry import record_to_matrix

    nusc = source.nusc
    records = [(r, ch) for ch, chain in source.records.channels.items() for r in chain]
    records.sort(key=lambda rc: rc[0]["timestamp"])
    t0 = records[0][0]["timestamp"] * 1000
    out: list[tuple[str, int, Any]] = []

    def mount(record: dict, channel: str, log_ns: int, stamp_ns: int) -> None:
        calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        out.append(("/tf", log_ns, frame_transform(base_frame, channel.lower(), stamp_ns, record_to_matrix(calib))))

    for channel, chain in source.records.channels.items():
        if chain:
            mount(chain[0], channel, t0, t0)
    for record, channel in records:
        t = record["timestamp"] * 1000
        pose = nusc.get("ego_pose", record["ego_pose_token"])
        out.append(("/tf", t, frame_transform(world_frame, base_frame, pose["timestamp"] * 1000, record_to_matrix(pose))))
        if record["is_key_frame"]:
            mount(record, channel, t, t)
        topic, frame = f"/{channel.lower()}", channel.lower()
        data = (source.dataroot / record["filename"]).read_bytes()
        if channel == LIDAR_NAME:
            out.append((topic, t, point_cloud(data, t, frame)))
            continue
        out.append((f"{topic}/image_rect_compressed", t,
                    CompressedImage(timestamp=timestamp(t), frame_id=frame, format="jpeg", data=data)))
        calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        out.append((f"{topic}/camera_info", t, camera_calibration(np.asarray(calib["camera_intrinsic"]),
                                                                  (record["height"], record["width"]), t, frame)))
    out.sort(key=lambda m: m[1])  # stable: keeps transforms before the sensor message of the same stamp
    return out


def write_foxglove_mcap(messages: list[tuple[str, int, Any]], path: str | Path, *, chunk_size: int = 1024 * 1024) -> Path:
    """Write (topic, log time ns, protobuf message) with ``mcap_protobuf``'s writer (empty profile)."""
    from mcap_protobuf.writer import Writer

    path = Path(path)
    with open(path, "wb") as stream:
        writer = Writer(stream, chunk_size=chunk_size, profile="")
        for topic, log_ns, message in messages:
            writer.write_message(topic, message, log_time=log_ns, publish_time=log_ns)
        writer.finish()
    return path
