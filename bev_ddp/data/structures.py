"""Typed containers shared by the dataset, the model and the replay tool.

Frames (right-handed, metres):

* **lidar**: the top LiDAR of the ego vehicle, axes as calibrated (on nuScenes' car x points to the
  right, y forward, z up).  BEV grids are in this frame (after BEV augmentation), indexed
  ``[C, X, Y]``: row = x, column = y.
* **camera**: OpenCV convention; x right, y down, z forward (optical axis).
* **image**: pixels, u right, v down, origin at the top-left corner of the top-left pixel.

A *sample* (one keyframe, as yielded by :class:`bev_ddp.data.nuscenes.NuScenesBEVDataset` and
assembled by the replay tool) is a dict with:

========================  ==========================  ==============================================
key                       shape / type                meaning
========================  ==========================  ==============================================
``img``                   float32 [N_cam, 3, H, W]    normalised images (ImageNet mean/std)
``geometry``              :class:`CameraGeometry`     everything the view transform needs
``points``                float32 [N_pts, 5]          x, y, z (m, lidar frame after BEV aug),
                                                      intensity, time lag (s) of the sweep
``gt_masks_bev``          float32 [6, 200, 200]       map classes ``[C, X, Y]`` (absent at inference)
``camera_valid``          bool [N_cam]                False where a camera image is missing
``meta``                  dict                        token, scene, timestamp (µs), flags, ...
========================  ==========================  ==============================================

:func:`collate_samples` stacks these into a batch: tensors gain a leading ``B`` and ``points``
becomes a list of B tensors (clouds differ in size).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from bev_ddp.errors import InputError


@dataclass
class CameraGeometry:
    """Camera geometry of one sample (or a batch: every tensor gains a leading ``B``).

    Attributes:
        intrinsics: [N_cam, 4, 4] pinhole intrinsics K padded to 4×4 (pixels of the *original*
            image).
        camera2lidar: [N_cam, 4, 4] rigid transform, camera frame → lidar frame.
        img_aug: [N_cam, 4, 4] image augmentation, original pixel (u, v) → augmented pixel
            (resize, crop, flip, rotate), identity when none.
        lidar_aug: [4, 4] BEV augmentation applied to the points and labels (rotation, scale,
            flip, translation), lidar frame → augmented lidar frame; identity when none.
        camera2ego: [N_cam, 4, 4] camera → ego vehicle frame (for information and replay).
        lidar2ego: [4, 4] lidar → ego vehicle frame.
    """

    intrinsics: torch.Tensor
    camera2lidar: torch.Tensor
    img_aug: torch.Tensor
    lidar_aug: torch.Tensor
    camera2ego: torch.Tensor
    lidar2ego: torch.Tensor

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Project augmented-lidar points into the augmented images.

        Args:
            points: [..., P, 3] x, y, z in metres, augmented lidar frame (leading dims as the
                geometry's batch dims, if any).

        Returns:
            [..., N_cam, P, 3]: (u, v) augmented-image pixels and depth d (m) along the optical
            axis; d <= 0 means the point is behind the camera.  ``img_aug`` acts on (u, v, d, 1)
            after the perspective division, as in :mod:`bev_ddp.data.transforms`.
        """
        lidar2camera = torch.linalg.inv(self.camera2lidar)  # [..., N, 4, 4]
        undo_bev_aug = torch.linalg.inv(self.lidar_aug).unsqueeze(-3)  # [..., 1, 4, 4]
        homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)  # [..., P, 4]
        cam = (self.intrinsics @ lidar2camera @ undo_bev_aug) @ homogeneous.unsqueeze(-3).transpose(-1, -2)
        cam = cam.transpose(-1, -2)  # [..., N, P, 4]: (u·d, v·d, d, 1)
        depth = cam[..., 2:3]
        uvd = torch.cat([cam[..., :2] / depth.clamp(min=1e-6), depth, cam[..., 3:]], dim=-1)  # (u, v, d, 1)
        return (self.img_aug.unsqueeze(-3) @ uvd.unsqueeze(-1)).squeeze(-1)[..., :3]

    def check(self, name: str = "geometry") -> "CameraGeometry":
        """Check every matrix (one sample or a batch) with :mod:`bev_ddp.data.geometry`: rigid
        ``camera2lidar`` / ``camera2ego`` / ``lidar2ego``, invertible intrinsics with positive focal
        lengths, finite invertible ``img_aug`` / ``lidar_aug``; :class:`InputError` naming the
        matrix (``name.camera2lidar[b, n]``) otherwise.  Returns ``self``."""
        from bev_ddp.data.geometry import check_intrinsics, check_invertible, check_rigid

        checks = {"intrinsics": lambda m, where: check_intrinsics(m[:3, :3], where),
                  "camera2lidar": check_rigid, "camera2ego": check_rigid, "lidar2ego": check_rigid,
                  "img_aug": check_invertible, "lidar_aug": check_invertible}
        for key, check in checks.items():
            matrices = getattr(self, key).detach().double().cpu().numpy()
            lead = matrices.shape[:-2]
            for index in np.ndindex(*lead):
                check(matrices[index], f"{name}.{key}{list(index) if index else ''}")
        return self

    def to(self, *args: Any, **kwargs: Any) -> "CameraGeometry":
        return CameraGeometry(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    @staticmethod
    def stack(items: list["CameraGeometry"]) -> "CameraGeometry":
        return CameraGeometry(
            **{f.name: torch.stack([getattr(g, f.name) for g in items]) for f in fields(CameraGeometry)}
        )


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch the samples of any task: stack tensors and camera geometry, keep ``points``, ``meta``
    and non-tensor values as lists.

    Tensors of one key must share a shape; otherwise :class:`InputError` names the key (image tasks:
    use batch size 1 or a fixed crop / scale).
    """
    if not samples:
        raise InputError("collate_samples got an empty list")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in ("points", "meta"):
            batch[key] = values
        elif isinstance(values[0], CameraGeometry):
            batch[key] = CameraGeometry.stack(values)
        elif isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise InputError(f"cannot batch '{key}' of different sizes {sorted(shapes)}; use batch_size 1 "
                                 "or a fixed crop / scale")
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
