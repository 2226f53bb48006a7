"""Small recordings made in code (the synthetic rig, random clouds and images) for replay tests."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bev_ddp.data.sensors import CAMERA_NAMES, CAMERA_RIG, LidarSpec
from bev_ddp.replay import export
from bev_ddp.replay.export import OutgoingMessage
from bev_ddp.replay.topics import TopicMap

T0 = 1_000_000_000  # ns
PERIOD = 50_000_000  # 20 Hz
IMAGE_SIZE = (24, 40)


def jpeg_bytes(seed: int, size: tuple[int, int] = IMAGE_SIZE) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def cloud(seed: int, n: int = 200) -> np.ndarray:
    """float32 [n, 4] points 2-20 m around the sensor, intensity 0-255."""
    rng = np.random.default_rng(seed)
    radius = rng.uniform(2.0, 20.0, n)
    angle = rng.uniform(-np.pi, np.pi, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), rng.uniform(-1.5, 1.0, n),
                     rng.uniform(0, 255, n)], axis=1).astype(np.float32)


def ego_pose(index: int, speed: float = 10.0) -> np.ndarray:
    """Ego vehicle → world: driving along world +x at ``speed`` m/s, turning slowly."""
    yaw = 0.02 * index
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    pose[0, 3] = speed * index * PERIOD * 1e-9
    return pose


def rig_recording(
    topics: TopicMap,
    *,
    frames: int = 4,
    camera_offset_ns: int = 5_000_000,
    camera_delay_ns: int = 10_000_000,
    with_tf: bool = True,
    with_world_tf: bool = True,
    skip_camera: tuple[str, int] | None = None,
) -> list[OutgoingMessage]:
    """LiDAR at 20 Hz, six cameras per LiDAR frame (stamped ``camera_offset_ns`` after it,
    recorded ``camera_delay_ns`` after their stamp), static and ego-motion transforms."""
    messages: list[OutgoingMessage] = []
    lidar = LidarSpec()
    if with_tf:
        static = [("base_link", "LIDAR_TOP", T0, lidar.lidar2ego())]
        static += [("base_link", name, T0, CAMERA_RIG[name].camera2ego()) for name in CAMERA_NAMES]
        messages.append(OutgoingMessage(topics.tf_static, export.TF_MESSAGE, T0, export.tf_message(static)))
    for cam in topics.cameras:
        info = export.camera_info(CAMERA_RIG[cam.name].intrinsics(IMAGE_SIZE), IMAGE_SIZE, T0, cam.name)
        messages.append(OutgoingMessage(cam.info, export.CAMERA_INFO, T0, info))
    for i in range(frames):
        t = T0 + i * PERIOD
        if with_tf and with_world_tf:
            for stamp in (t, t + camera_offset_ns):
                pose = ego_pose(i) if stamp == t else ego_pose(i + camera_offset_ns / PERIOD)
                tf = export.tf_message([("map", "base_link", stamp, pose)])
                messages.append(OutgoingMessage(topics.tf, export.TF_MESSAGE, stamp, tf))
        messages.append(OutgoingMessage(topics.lidar_topic, export.POINTCLOUD2, t,
                                        export.pointcloud2(cloud(i), t, "LIDAR_TOP")))
        for k, cam in enumerate(topics.cameras):
            if skip_camera == (cam.name, i):
                continue
            stamp = t + camera_offset_ns
            image = export.compressed_image(jpeg_bytes(100 * i + k), stamp, cam.name)
            messages.append(OutgoingMessage(cam.image, export.COMPRESSED_IMAGE, stamp + camera_delay_ns, image))
    messages.sort(key=lambda m: m.log_ns)
    return messages
