"""Turn an assembled :class:`~bev_ddp.replay.sync.SensorFrame` into the model's sample dict.

The sample is built the way :class:`bev_ddp.data.nuscenes.NuScenesBEVDataset` builds an
evaluation sample (see :mod:`bev_ddp.data.structures`), with the same transform functions:
images scaled to [0, 1], warped by the evaluation image augmentation (middle of each range),
ImageNet-normalised, with their ``img_aug`` matrices; no BEV augmentation (``lidar_aug``
identity); points ``[N, 5]`` (x, y, z, intensity, time lag).  A camera without an image in the
frame gets a zero image and ``camera_valid`` False but keeps its calibration, as in the
dataset; calibration that is unknown altogether is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bev_ddp.data.nuscenes import IMAGENET_MEAN, IMAGENET_STD
from bev_ddp.data.structures import CameraGeometry
from bev_ddp.data.transforms import ImageAugConfig, image_aug_matrix, to_img_aug4, warp_image
from bev_ddp.replay.sync import SensorFrame
from bev_ddp.replay.topics import CAMERA_NAMES


@dataclass
class SampleBuilder:
    """Callable frame → sample dict.

    Args:
        image_size: (H, W) of the network input, pixels.
        image_aug: augmentation ranges; evaluation uses the middle of each range.
    """

    image_size: tuple[int, int]
    image_aug: ImageAugConfig = ImageAugConfig()

    @staticmethod
    def from_config(cfg: Any) -> "SampleBuilder":
        return SampleBuilder(image_size=(int(cfg.data.image_size[0]), int(cfg.data.image_size[1])),
                             image_aug=image_aug_from_config(cfg.data.get("aug")))

    def __call__(self, frame: SensorFrame) -> dict[str, Any]:
        if frame.points is None:
            raise ValueError(f"frame {frame.index} has no LiDAR points; it cannot become a sample")
        out_h, out_w = self.image_size
        images, intrinsics, camera2lidar, img_aug, camera2ego = [], [], [], [], []
        valid = frame.camera_valid
        for name in CAMERA_NAMES:
            src = frame.image_sizes.get(name) or self.image_size
            m = image_aug_matrix(tuple(src), self.image_size, self.image_aug, None)  # [3, 3] evaluation setting
            if valid[name]:
                rgb = torch.from_numpy(np.array(frame.images[name], copy=True)).permute(2, 0, 1)  # [3, H, W]
                image = rgb.float() / 255.0
                images.append((warp_image(image, m, self.image_size) - IMAGENET_MEAN) / IMAGENET_STD)
            else:
                images.append(torch.zeros(3, out_h, out_w))
            k4 = np.eye(4)
            if frame.intrinsics[name] is not None:
                k4[:3, :3] = frame.intrinsics[name]
            intrinsics.append(k4)
            camera2lidar.append(_or_identity(frame.camera2lidar[name]))
            camera2ego.append(_or_identity(frame.camera2ego[name]))
            img_aug.append(to_img_aug4(m))

        def stack(mats: list[np.ndarray]) -> torch.Tensor:
            return torch.as_tensor(np.stack(mats), dtype=torch.float32)  # [N_cam, 4, 4]

        geometry = CameraGeometry(
            intrinsics=stack(intrinsics),
            camera2lidar=stack(camera2lidar),
            img_aug=stack(img_aug),
            lidar_aug=torch.eye(4),
            camera2ego=stack(camera2ego),
            lidar2ego=torch.as_tensor(frame.lidar2ego, dtype=torch.float32),
        )
        meta = {
            "token": frame.meta.get("token", f"frame-{frame.index:06d}"),
            "scene": frame.meta.get("scene", ""),
            "timestamp": frame.stamp_ns // 1000,
            "flags": list(frame.flags),
            "frame_index": frame.index,
        }
        return {
            "img": torch.stack(images),  # [N_cam, 3, H, W]
            "geometry": geometry,
            "points": torch.from_numpy(np.ascontiguousarray(frame.points, dtype=np.float32)),  # [N, 5]
            "camera_valid": torch.tensor([valid[n] for n in CAMERA_NAMES]),
            "meta": meta,
        }


def _or_identity(matrix: np.ndarray | None) -> np.ndarray:
    return np.eye(4) if matrix is None else matrix


def image_aug_from_config(aug: Any) -> ImageAugConfig:
    """The image augmentation ranges of a config's ``data.aug`` mapping (``image:`` sub-mapping)."""
    image = dict((aug or {}).get("image", {}) or {})
    return ImageAugConfig(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in image.items()})
