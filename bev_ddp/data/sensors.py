"""Sensor names and the nuScenes-like sensor rig of the synthetic world.

Camera order is the one BEVFusion uses for nuScenes; every per-camera tensor of a sample follows it.
Ego frame: x forward, y left, z up (m).  Camera frame: OpenCV (x right, y down, z forward).
The nuScenes top LiDAR is mounted turned by -90° about z, so its x axis points to the ego's right
and its y axis forward; the synthetic rig copies that mounting.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
LIDAR_NAME = "LIDAR_TOP"

NUSCENES_IMAGE_SIZE = (900, 1600)  # (H, W) of the real nuScenes cameras


@dataclass(frozen=True)
class CameraSpec:
    """A camera of the rig at the nuScenes resolution (1600×900).

    Attributes:
        yaw_deg: heading of the optical axis in the ego frame (0 = forward, + = left), degrees.
        translation: camera centre in the ego frame, m.
        focal: focal length, pixels.  principal: (cx, cy), pixels.
    """

    yaw_deg: float
    translation: tuple[float, float, float]
    focal: float
    principal: tuple[float, float]

    def intrinsics(self, image_size: tuple[int, int]) -> np.ndarray:
        """[3, 3] K for an image of ``(H, W)`` pixels (nuScenes K scaled per axis)."""
        sy = image_size[0] / NUSCENES_IMAGE_SIZE[0]
        sx = image_size[1] / NUSCENES_IMAGE_SIZE[1]
        return np.array(
            [[self.focal * sx, 0.0, self.principal[0] * sx],
             [0.0, self.focal * sy, self.principal[1] * sy],
             [0.0, 0.0, 1.0]]
        )

    def camera2ego(self) -> np.ndarray:
        """[4, 4] camera (OpenCV) → ego transform of a level camera."""
        yaw = np.radians(self.yaw_deg)
        forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        out = np.eye(4)
        out[:3, :3] = np.stack([right, down, forward], axis=1)
        out[:3, 3] = self.translation
        return out


# values close to the nuScenes calibration (ego frame, 1600×900 pixels)
CAMERA_RIG: dict[str, CameraSpec] = {
    "CAM_FRONT": CameraSpec(0.0, (1.70, 0.02, 1.51), 1266.0, (816.0, 491.0)),
    "CAM_FRONT_RIGHT": CameraSpec(-55.0, (1.55, -0.49, 1.50), 1260.0, (807.0, 495.0)),
    "CAM_FRONT_LEFT": CameraSpec(55.0, (1.52, 0.49, 1.51), 1272.0, (826.0, 479.0)),
    "CAM_BACK": CameraSpec(180.0, (0.03, 0.00, 1.54), 809.0, (829.0, 481.0)),
    "CAM_BACK_LEFT": CameraSpec(110.0, (1.04, 0.48, 1.56), 1256.0, (817.0, 451.0)),
    "CAM_BACK_RIGHT": CameraSpec(-110.0, (1.03, -0.48, 1.57), 1260.0, (818.0, 505.0)),
}


@dataclass(frozen=True)
class LidarSpec:
    """A spinning 32-beam LiDAR (HDL-32E-like, as on the nuScenes car).

    Attributes:
        translation: sensor origin in the ego frame, m.  yaw_deg: mounting yaw about z, degrees.
        elevation_deg: (min, max) beam elevation, degrees.  beams: number of lasers.
        max_range: m.
    """

    translation: tuple[float, float, float] = (0.943, 0.0, 1.84)
    yaw_deg: float = -90.0
    elevation_deg: tuple[float, float] = (-30.67, 10.67)
    beams: int = 32
    max_range: float = 70.0

    def lidar2ego(self) -> np.ndarray:
        yaw = np.radians(self.yaw_deg)
        out = np.eye(4)
        out[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        out[:3, 3] = self.translation
        return out

    def directions(self, azimuth_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit ray directions [beams·azimuth_steps, 3] in the sensor frame and their ring index."""
        elevation = np.radians(np.linspace(self.elevation_deg[0], self.elevation_deg[1], self.beams))
        azimuth = np.arange(azimuth_steps) * (2 * np.pi / azimuth_steps)
        el, az = np.meshgrid(elevation, azimuth, indexing="ij")  # [beams, steps]
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
        ring = np.broadcast_to(np.arange(self.beams)[:, None], el.shape)
        return dirs.reshape(-1, 3), ring.reshape(-1).astype(np.float32)
