"""BEVFusion (Liu et al., 2023) for BEV map segmentation, with a baseline or DDP head.

One model class for camera-only, LiDAR-only and fusion: the encoders that are present are run,
their BEV maps are fused by :class:`ConvFuser` when there are two, decoded by SECOND + SECONDFPN
and handed to the head.  Shapes at the full nuScenes config (batch B, 6 cameras)::

    img [B, 6, 3, 256, 704] -> Swin-T -> LSS-FPN [B·6, 256, 32, 88] -> LSS [B, 80, 128, 128] ─┐
    points (B clouds [N, 5]) -> voxels -> SparseEncoder [B, 256, 128, 128] ────────────────────┤
                                        ConvFuser [B, 256, 128, 128] <─────────────────────────┘
    -> SECOND + SECONDFPN [B, 512, 128, 128] -> head (grid transform to [.., 200, 200]) -> [B, 6, 200, 200]

Missing inputs degrade instead of failing: a camera with ``camera_valid`` False contributes no
features, a sample without LiDAR points has an empty LiDAR map; both are reported with a warning.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import nn

from bev_ddp.nn.backbone import TimmBackbone
from bev_ddp.bev.camera.neck import GeneralizedLSSFPN
from bev_ddp.bev.camera.view_transform import LSSTransform
from bev_ddp.bev.fuser import ConvFuser
from bev_ddp.bev.heads import BEVPrediction, DDPBEVHead
from bev_ddp.data.structures import CameraGeometry
from bev_ddp.diffusion.sampler import check_step_counts
from bev_ddp.diffusion.value_checks import check_finite
from bev_ddp.errors import ConfigError, InputError

__all__ = ["BEVFusionModel", "BEVPrediction", "CameraEncoder", "LiDAREncoder", "DegradedInputWarning"]


class DegradedInputWarning(UserWarning):
    """A sample is missing a camera image or its LiDAR points; the model runs on what is left."""


def _sample_names(batch: dict[str, Any], indices: Sequence[int]) -> str:
    metas = batch.get("meta") or []
    names = []
    for i in indices:
        meta = metas[i] if i < len(metas) and isinstance(metas[i], dict) else {}
        names.append(str(meta.get("token", f"#{i}")))
    return ", ".join(names)


class CameraEncoder(nn.Module):
    """Images → BEV: backbone → neck (first output level) → LSS view transform.

    Args:
        backbone: multi-scale image backbone (declares ``feature_specs``).
        neck: GeneralizedLSSFPN built from the backbone's specs.
        view_transform: LSS transform whose feature stride matches the neck's first level.
    """

    def __init__(self, *, backbone: TimmBackbone, neck: GeneralizedLSSFPN, view_transform: LSSTransform):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.view_transform = view_transform
        self.out_channels = view_transform.out_channels

    def image_features(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, N, 3, H, W] → first neck level [B, N, C, fH, fW]."""
        batch, cams = img.shape[:2]
        feats = self.neck(self.backbone(img.flatten(0, 1)))[0]  # [B·N, C, fH, fW]
        return feats.view(batch, cams, *feats.shape[1:])  # [B, N, C, fH, fW]

    def forward(
        self, img: torch.Tensor, geometry: CameraGeometry, camera_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """→ [B, C_bev, X, Y] camera BEV features."""
        return self.view_transform(self.image_features(img), geometry, camera_valid)


class LiDAREncoder(nn.Module):
    """Points → BEV: hard voxelization (mean features) → sparse 3-D conv encoder."""

    def __init__(self, *, voxelizer: nn.Module, sparse_encoder: nn.Module):
        super().__init__()
        self.voxelizer = voxelizer
        self.sparse_encoder = sparse_encoder
        self.out_channels = sparse_encoder.out_channels

    def forward(self, points: Sequence[torch.Tensor]) -> torch.Tensor:
        """B clouds [N_b, 5] (lidar frame, m) → [B, C_lidar, X, Y]."""
        return self.sparse_encoder(self.voxelizer(points))


class BEVFusionModel(nn.Module):
    """Camera and/or LiDAR encoders → fuser → SECOND + SECONDFPN → BEV head.

    Args:
        camera: camera encoder or None (LiDAR-only).
        lidar: LiDAR encoder or None (camera-only).
        fuser: ConvFuser when both encoders are present, else None.
        decoder_backbone: SECOND or GeneralizedResNet (BEV map → list of stage maps).
        decoder_neck: SECONDFPN or LSSFPN (stage maps → one map).
        head: a head with ``forward(feats, targets) -> (preds, losses)`` and ``predict``.
    """

    def __init__(
        self,
        *,
        camera: CameraEncoder | None,
        lidar: LiDAREncoder | None,
        fuser: ConvFuser | None,
        decoder_backbone: nn.Module,
        decoder_neck: nn.Module,
        head: nn.Module,
    ):
        super().__init__()
        if camera is None and lidar is None:
            raise InputError("BEVFusionModel needs a camera encoder, a LiDAR encoder or both")
        if (camera is not None and lidar is not None) != (fuser is not None):
            raise InputError("a fuser is needed exactly when both encoders are present")
        self.camera = camera
        self.lidar = lidar
        self.fuser = fuser
        self.decoder_backbone = decoder_backbone
        self.decoder_neck = decoder_neck
        self.head = head

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(name for name, enc in (("camera", self.camera), ("lidar", self.lidar)) if enc is not None)

    # -- stages (public so benchmarks can time them one by one) ---------------------------------
    def camera_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """Camera BEV map [B, C_cam, X, Y] (missing cameras masked out, with a warning)."""
        if self.camera is None:
            raise InputError(f"this model has no camera encoder (modalities {list(self.modalities)})")
        img = batch.get("img")
        if not isinstance(img, torch.Tensor) or img.ndim != 5 or img.shape[2] != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise InputError(f"batch['img'] must be a float tensor [B, N_cam, 3, H, W], got {shape}")
        check_finite("batch['img']", img)
        geometry = batch.get("geometry")
        if not isinstance(geometry, CameraGeometry):
            raise InputError("batch['geometry'] must be a CameraGeometry (use collate_samples)")
        if tuple(geometry.intrinsics.shape[:2]) != tuple(img.shape[:2]):
            raise InputError(
                f"batch['geometry'] is for {tuple(geometry.intrinsics.shape[:2])} (B, N_cam) cameras but "
                f"batch['img'] has {tuple(img.shape[:2])}"
            )
        geometry.check("batch['geometry']")  # rigid, invertible, positive focal lengths: one line, not a LinAlgError
        valid = batch.get("camera_valid")
        if valid is not None:
            valid = valid.to(torch.bool)
            missing_per_sample = (~valid).sum(dim=1).tolist()  # [B], the one read-back of the mask
            missing = [i for i, count in enumerate(missing_per_sample) if count]
            if missing:
                warnings.warn(
                    f"{sum(missing_per_sample)} camera image(s) missing in sample(s) {_sample_names(batch, missing)}; "
                    "running on the remaining cameras",
                    DegradedInputWarning,
                    stacklevel=3,
                )
            else:
                valid = None
        return self.camera(img, geometry.to(img.device), valid)

    def lidar_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """LiDAR BEV map [B, C_lidar, X, Y] (a sample without points gets an empty map, with a warning)."""
        if self.lidar is None:
            raise InputError(f"this model has no LiDAR encoder (modalities {list(self.modalities)})")
        points = batch.get("points")
        if not isinstance(points, (list, tuple)) or not all(isinstance(p, torch.Tensor) for p in points):
            raise InputError("batch['points'] must be a list of [N, 5] point tensors (one per sample)")
        empty = [i for i, p in enumerate(points) if p.shape[0] == 0]
        if empty:
            warnings.warn(
                f"no LiDAR points in sample(s) {_sample_names(batch, empty)}; their LiDAR BEV map is empty",
                DegradedInputWarning,
                stacklevel=3,
            )
        # spconv's CPU convolutions write torch.mm results into float32 buffers, which CPU autocast
        # breaks; the LiDAR branch runs without CPU autocast (CUDA autocast is left as it is)
        with torch.autocast("cpu", enabled=False):
            return self.lidar(points)

    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        """Encoders → fuser → SECOND + SECONDFPN: [B, C_dec, X, Y] features for the head."""
        maps = []
        if self.camera is not None:
            maps.append(self.camera_features(batch))
        if self.lidar is not None:
            maps.append(self.lidar_features(batch))
        bev = self.fuser(maps) if self.fuser is not None else maps[0]
        return self.decoder_neck(self.decoder_backbone(bev))

    # -- the task contract ------------------------------------------------------------------------
    def forward(
        self, batch: dict[str, Any], self_aligned: bool = False
    ) -> tuple[BEVPrediction | None, dict[str, torch.Tensor]]:
        """Training forward: (preds or None, losses) against ``batch['gt_masks_bev']`` [B, K, X, Y].

        ``self_aligned`` switches the DDP head to self-aligned denoising (paper Alg. 4).
        """
        targets = batch.get("gt_masks_bev")
        if not isinstance(targets, torch.Tensor):
            raise InputError("training batch has no 'gt_masks_bev' tensor [B, K, X, Y]")
        if self_aligned:
            if not isinstance(self.head, DDPBEVHead):
                raise ConfigError(f"self-aligned denoising needs the DDP head, the model has {type(self.head).__name__}")
            return self.head(self.encode(batch), targets, self_aligned=True)
        return self.head(self.encode(batch), targets)

    @property
    def steps(self) -> int:
        """Sampling steps of :meth:`predict` when none are asked for (``model.head.ddp.steps``; 1 for the
        conv head)."""
        return self.head.steps

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], steps: Sequence[int] | None = None, seed: int = 0) -> dict[int, BEVPrediction]:
        """Inference: the encoders run once, the head samples once per requested step count
        (``None``: :attr:`steps`).  The counts are checked before the encoders run."""
        counts = [self.steps] if steps is None else check_step_counts(steps)
        return self.head.predict(self.encode(batch), steps=counts, seed=seed)
