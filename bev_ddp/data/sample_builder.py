"""One builder of the BEV model's sample (the dict of :mod:`bev_ddp.data.structures`) from sensor data.

:class:`~bev_ddp.data.nuscenes.NuScenesBEVDataset` (info records), the replay (assembled log frames)
and the Python API (raw images, points and calibrations) all build their samples here, so a frame
gives the same tensors whichever way it comes in:

* each camera image: float [3, H, W] in [0, 1] → warped by the image augmentation matrix (random in
  training, the middle of each range at evaluation) → normalised with the image encoder's mean and
  std (:class:`~bev_ddp.nn.backbone.ImageNormalisation`, from timm's pretrained config of the
  backbone); a camera without an image gets a zero image and ``camera_valid`` False but keeps its
  calibration;
* the geometry: intrinsics, camera → LiDAR, camera → ego, image and BEV augmentation matrices
  ([N_cam, 4, 4] float32, :class:`~bev_ddp.data.structures.CameraGeometry`);
* points float32 [N, 5] (x, y, z in the LiDAR frame, m; intensity; time lag, s).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bev_ddp.data.sensors import CAMERA_NAMES
from bev_ddp.data.structures import CameraGeometry
from bev_ddp.data.transforms import ImageAugConfig, image_aug_matrix, to_img_aug4, warp_image
from bev_ddp.errors import InputError
from bev_ddp.nn.backbone import IMAGENET_NORMALISATION, ImageNormalisation, image_normalisation


def as_4x4(m: Any) -> np.ndarray:
    """A [3, 3] or [4, 4] matrix as float64 [4, 4] (a [3, 3] one in the top-left of the identity)."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (3, 3):
        out = np.eye(4)
        out[:3, :3] = m
        return out
    return m


@dataclass
class SensorInputs:
    """One frame of raw sensor data, by camera name (the replay's ``SensorFrame`` has the same fields).

    Attributes:
        index, stamp_ns: position and LiDAR stamp of the frame (0 when unknown).
        points: float32 [N, 5] x, y, z (m, LiDAR frame), intensity, time lag (s).
        images: uint8 [H, W, 3] RGB or ``None`` (missing); image_sizes: (H, W) the calibration is for.
        intrinsics: float64 [3, 3] pixels; camera2lidar / camera2ego: float64 [4, 4]; ``None``: unknown.
        lidar2ego: float64 [4, 4].
        flags: what was missing or degraded; meta: source ids (``token``, ``scene``).
    """

    points: np.ndarray
    images: dict[str, np.ndarray | None]
    image_sizes: dict[str, tuple[int, int] | None]
    intrinsics: dict[str, np.ndarray | None]
    camera2lidar: dict[str, np.ndarray | None]
    camera2ego: dict[str, np.ndarray | None]
    lidar2ego: np.ndarray
    index: int = 0
    stamp_ns: int = 0
    flags: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def camera_valid(self) -> dict[str, bool]:
        """A camera is used when it has an image, intrinsics and its pose in the LiDAR frame."""
        return {name: self.images[name] is not None and self.intrinsics[name] is not None
                and self.camera2lidar[name] is not None for name in CAMERA_NAMES}


@dataclass
class SampleBuilder:
    """Sensor data → sample dict (see the module docstring).

    Args:
        image_size: (H, W) of the network input, pixels.
        image_aug: augmentation ranges; evaluation (no generator) uses the middle of each range.
        normalisation: the image encoder's mean / std.
    """

    image_size: tuple[int, int]
    image_aug: ImageAugConfig = ImageAugConfig()
    normalisation: ImageNormalisation = IMAGENET_NORMALISATION

    @staticmethod
    def from_config(cfg: Any) -> "SampleBuilder":
        """The evaluation builder of a BEV config: ``data.image_size``, ``data.aug.image`` and the
        camera backbone's normalisation."""
        return SampleBuilder(image_size=(int(cfg.data.image_size[0]), int(cfg.data.image_size[1])),
                             image_aug=image_aug_from_config(cfg.data.get("aug")),
                             normalisation=image_normalisation(cfg.model.camera.backbone))

    def camera(self, image: torch.Tensor | None, source_size: tuple[int, int],
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """One camera: (network input [3, H, W], image augmentation matrix [3, 3]).

        Args:
            image: float [3, h, w] in [0, 1], or ``None`` for a missing image (zeros come back).
            source_size: (h, w) the camera's calibration is for.
            generator: draws the training augmentation; ``None``: the evaluation setting.
        """
        m = image_aug_matrix(tuple(source_size), self.image_size, self.image_aug, generator)  # [3, 3]
        if image is None:
            return torch.zeros(3, *self.image_size), m
        return self.normalisation.apply(warp_image(image, m, self.image_size)), m

    @staticmethod
    def assemble(*, images: Sequence[torch.Tensor], camera_valid: Sequence[bool], intrinsics: Sequence[Any],
                 camera2lidar: Sequence[Any], camera2ego: Sequence[Any], img_aug: Sequence[np.ndarray],
                 lidar_aug: np.ndarray, lidar2ego: Any, points: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        """The sample dict from per-camera lists (in :data:`CAMERA_NAMES` order) and the frame's parts."""
        def stack(mats: Sequence[Any]) -> torch.Tensor:
            return torch.as_tensor(np.stack([as_4x4(m) for m in mats]), dtype=torch.float32)  # [N_cam, 4, 4]

        geometry = CameraGeometry(
            intrinsics=stack(intrinsics),
            camera2lidar=stack(camera2lidar),
            img_aug=stack(img_aug),
            lidar_aug=torch.as_tensor(lidar_aug, dtype=torch.float32),
            camera2ego=stack(camera2ego),
            lidar2ego=torch.as_tensor(as_4x4(lidar2ego), dtype=torch.float32),
        )
        return {
            "img": torch.stack(list(images)),  # [N_cam, 3, H, W]
            "geometry": geometry,
            "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),  # [N, 5]
            "camera_valid": torch.tensor(list(camera_valid), dtype=torch.bool),
            "meta": meta,
        }

    def __call__(self, frame: SensorInputs) -> dict[str, Any]:
        """The evaluation sample of one frame (no BEV augmentation); unknown calibration is the identity."""
        if frame.points is None:
            raise InputError(f"frame {frame.index} has no LiDAR points; it cannot become a sample")
        valid = frame.camera_valid
        images, img_aug = [], []
        for name in CAMERA_NAMES:
            image = None
            if valid[name]:
                image = torch.from_numpy(np.array(frame.images[name], copy=True)).permute(2, 0, 1).float() / 255.0
            x, m = self.camera(image, frame.image_sizes.get(name) or self.image_size)
            images.append(x)
            img_aug.append(to_img_aug4(m))
        meta = {
            "token": frame.meta.get("token", f"frame-{frame.index:06d}"),
            "scene": frame.meta.get("scene", ""),
            "timestamp": frame.stamp_ns // 1000,
            "flags": list(frame.flags),
            "frame_index": frame.index,
        }
        return self.assemble(
            images=images, camera_valid=[valid[n] for n in CAMERA_NAMES],
            intrinsics=[_or_identity(frame.intrinsics[n]) for n in CAMERA_NAMES],
            camera2lidar=[_or_identity(frame.camera2lidar[n]) for n in CAMERA_NAMES],
            camera2ego=[_or_identity(frame.camera2ego[n]) for n in CAMERA_NAMES],
            img_aug=img_aug, lidar_aug=np.eye(4), lidar2ego=frame.lidar2ego, points=frame.points, meta=meta)


def _or_identity(matrix: np.ndarray | None) -> np.ndarray:
    return np.eye(4) if matrix is None else matrix


def image_aug_from_config(aug: Mapping[str, Any] | None) -> ImageAugConfig:
    """The image augmentation ranges of a config's ``data.aug`` mapping (``image:`` sub-mapping)."""
    image = dict((aug or {}).get("image", {}) or {})
    return ImageAugConfig(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in image.items()})
