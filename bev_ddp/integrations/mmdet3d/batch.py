"""mmdet3d samples ↔ bev_ddp batches: which key and matrix maps onto which.

mmdet3d 1.x (``Det3DDataPreprocessor`` + ``Pack3DDetInputs``) hands a model ``inputs`` and a list of
``Det3DDataSample``; bev_ddp's :class:`~bev_ddp.bev.model.BEVFusionModel` reads the sample dict of
:mod:`bev_ddp.data.structures`.  Per sample (N cameras):

==========================================  ======================================  ==========================
mmdet3d                                     bev_ddp                                 frame / shape
==========================================  ======================================  ==========================
``inputs['imgs']`` [B, N, 3, H, W]          ``img``                                 normalised RGB
``inputs['points']`` B × [P, ≥5]            ``points`` B × [P, 5]                   x, y, z (m, augmented
                                                                                    lidar), intensity, time lag
metainfo ``cam2img`` N × 3×3 / 4×4          ``geometry.intrinsics`` [N, 4, 4]       original-image pixels
metainfo ``lidar2cam`` N × 4×4              ``geometry.camera2lidar`` = inverse     lidar → camera
metainfo ``img_aug_matrix`` N × 4×4         ``geometry.img_aug``                    (u, v, d, 1), BEVFusion's
metainfo ``lidar_aug_matrix`` 4×4           ``geometry.lidar_aug``                  lidar → augmented lidar
metainfo ``cam2ego`` N × 4×4, ``lidar2ego``  ``geometry.camera2ego``, ``lidar2ego``  information only
``gt_masks_bev`` [K, X, Y] (data sample)    ``gt_masks_bev`` [B, K, X, Y]           augmented lidar grid
metainfo ``token`` / ``sample_idx``         ``meta['token']``
==========================================  ======================================  ==========================

``img_aug_matrix`` and ``lidar_aug_matrix`` are the keys of mmdet3d's BEVFusion project
(``ImageAug3D``, ``BEVFusionGlobalRotScaleTrans``, ``BEVFusionRandomFlip3D``) and of
:class:`~bev_ddp.integrations.mmdet3d.transforms.BEVDDPImageAug`; absent, they are the identity.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from bev_ddp.data.sample_builder import as_4x4
from bev_ddp.data.structures import CameraGeometry
from bev_ddp.errors import InputError

IMAGE_KEYS = ("imgs", "img")


def _pad4(matrix: Any) -> np.ndarray:
    """A 3×3 or 4×4 matrix as [4, 4] float64 (:func:`~bev_ddp.data.sample_builder.as_4x4`); other shapes
    raise :class:`InputError`."""
    m = as_4x4(matrix)
    if m.shape != (4, 4):
        raise InputError(f"expected a 3x3 or 4x4 matrix, got shape {m.shape}")
    return m


def _per_camera(meta: dict[str, Any], key: str, cams: int, *, required: bool) -> np.ndarray:
    """[N, 4, 4] of metainfo ``key`` (a list of N matrices); identities when absent and not required."""
    if key not in meta:
        if required:
            raise InputError(f"data sample metainfo has no {key!r} (keys: {', '.join(sorted(meta))})")
        return np.tile(np.eye(4), (cams, 1, 1))
    matrices = [_pad4(m) for m in meta[key]]
    if len(matrices) != cams:
        raise InputError(f"metainfo {key!r} has {len(matrices)} matrices for {cams} cameras")
    return np.stack(matrices)


def camera_geometry(meta: dict[str, Any], cams: int) -> CameraGeometry:
    """:class:`CameraGeometry` of one sample from mmdet3d's calibration metainfo (see the module table)."""
    lidar2cam = _per_camera(meta, "lidar2cam", cams, required=True)  # [N, 4, 4]
    f32 = dict(dtype=torch.float32)
    return CameraGeometry(
        intrinsics=torch.as_tensor(_per_camera(meta, "cam2img", cams, required=True), **f32),
        camera2lidar=torch.as_tensor(np.linalg.inv(lidar2cam), **f32),
        img_aug=torch.as_tensor(_per_camera(meta, "img_aug_matrix", cams, required=False), **f32),
        lidar_aug=torch.as_tensor(_pad4(meta.get("lidar_aug_matrix", np.eye(4))), **f32),
        camera2ego=torch.as_tensor(_per_camera(meta, "cam2ego", cams, required=False), **f32),
        lidar2ego=torch.as_tensor(_pad4(meta.get("lidar2ego", np.eye(4))), **f32),
    )


def points_of(cloud: torch.Tensor) -> torch.Tensor:
    """[P, ≥5] mmdet3d points → [P, 5] x, y, z, intensity, time lag (extra columns dropped)."""
    if cloud.ndim != 2 or cloud.shape[1] < 5:
        raise InputError(f"points must be [P, >=5] (x, y, z, intensity, time lag), got {tuple(cloud.shape)}")
    return cloud[:, :5].float().contiguous()


def to_bev_batch(inputs: dict[str, Any], data_samples: Sequence[Any], *, modalities: Sequence[str],
                 with_labels: bool) -> dict[str, Any]:
    """A :class:`~bev_ddp.bev.model.BEVFusionModel` batch of mmdet3d's ``inputs`` + ``data_samples``.

    Args:
        inputs: ``imgs`` [B, N, 3, H, W] (normalised by the data preprocessor) and/or ``points``.
        data_samples: B ``Det3DDataSample`` with the calibration metainfo; with ``with_labels``, each
            carries ``gt_masks_bev`` [K, X, Y] (:class:`~.transforms.PackBEVMapInputs`).
        modalities: the model's (``camera``, ``lidar``): only those inputs are required.
    """
    batch: dict[str, Any] = {"meta": [{"token": str(s.metainfo.get("token", s.metainfo.get("sample_idx", i)))}
                                      for i, s in enumerate(data_samples)]}
    if "camera" in modalities:
        img = next((inputs[k] for k in IMAGE_KEYS if k in inputs), None)
        if not isinstance(img, torch.Tensor) or img.ndim != 5:
            raise InputError("inputs need multi-view images 'imgs' [B, N, 3, H, W] (Det3DDataPreprocessor)")
        batch["img"] = img.float()
        geometries = [camera_geometry(s.metainfo, img.shape[1]) for s in data_samples]
        batch["geometry"] = CameraGeometry.stack(geometries).to(img.device)
    if "lidar" in modalities:
        if "points" not in inputs:
            raise InputError("inputs have no 'points' (the model has a LiDAR encoder)")
        batch["points"] = [points_of(p) for p in inputs["points"]]
    if with_labels:
        missing = [i for i, s in enumerate(data_samples) if "gt_masks_bev" not in s]
        if missing:
            raise InputError(f"data samples {missing} have no gt_masks_bev (add BEVMapLabels and PackBEVMapInputs)")
        device = next((v.device for v in (batch.get("img"), *batch.get("points", [])) if v is not None), None)
        batch["gt_masks_bev"] = torch.stack([torch.as_tensor(s.gt_masks_bev).float() for s in data_samples]).to(device)
    return batch
