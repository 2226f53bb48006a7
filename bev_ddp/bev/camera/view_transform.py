"""Lift-splat (LSS) view transform: camera features → BEV features (Philion & Fidler, 2020).

1. *Lift*: a 1×1 conv predicts, per feature pixel, a softmax over ``D`` depth bins and a
   ``C``-channel context; their outer product places the context along the pixel's ray.
2. *Geometry*: every (pixel, depth bin) of the frustum is taken through the camera geometry to the
   augmented lidar frame: undo the image augmentation, back-project with the intrinsics, move to
   the lidar frame, apply the BEV augmentation.
3. *Splat*: frustum points are summed into the BEV voxel grid with :func:`bev_ddp.ops.bev_pool`;
   the z cells are stacked into channels.

A BEVFusion-style conv stack then downsamples the BEV map (×2 at the full config:
[B, 80, 256, 256] → [B, 80, 128, 128]).

Frames and units: metres, lidar frame (x forward, y left, z up); pixels of the augmented image.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bev_ddp.data.geometry import Bound
from bev_ddp.data.structures import CameraGeometry
from bev_ddp.errors import InputError
from bev_ddp.nn.layers import conv_bn_relu
from bev_ddp.ops import bev_pool


FRUSTUM_PIXELS = ("centres", "linspace")
CELL_INDEX = ("floor", "trunc")


def make_frustum(
    *, image_size: tuple[int, int], feature_size: tuple[int, int], depth: Bound, pixels: str = "centres"
) -> torch.Tensor:
    """Frustum of (u, v, d, 1) points: [D, fH, fW, 4].

    ``u, v`` are the centres of the feature pixels in (augmented) input pixels, in the pixel-edge
    convention of :mod:`bev_ddp.data.transforms` (input pixel (i, j) spans [j, j+1) × [i, i+1)):
    feature column j covers input columns [j·s, (j+1)·s), centre (j + 0.5)·s.  ``d`` are the bin
    depths ``lower, lower + step, ...`` in metres along the optical axis.  ``pixels="linspace"``
    places them as BEVFusion does instead: ``linspace(0, W - 1, fW)`` (up to ``s / 2`` px away).
    """
    if pixels not in FRUSTUM_PIXELS:
        raise ValueError(f"frustum pixels must be one of {FRUSTUM_PIXELS}, got {pixels!r}")
    image_h, image_w = image_size
    feat_h, feat_w = feature_size
    ds = torch.arange(depth.cells, dtype=torch.float32) * depth.step + depth.lower  # [D]
    if pixels == "linspace":
        us = torch.linspace(0, image_w - 1, feat_w, dtype=torch.float32)
        vs = torch.linspace(0, image_h - 1, feat_h, dtype=torch.float32)
    else:
        us = (torch.arange(feat_w, dtype=torch.float32) + 0.5) * (image_w / feat_w)
        vs = (torch.arange(feat_h, dtype=torch.float32) + 0.5) * (image_h / feat_h)
    d, v, u = torch.meshgrid(ds, vs, us, indexing="ij")  # each [D, fH, fW]
    return torch.stack([u, v, d, torch.ones_like(d)], dim=-1)  # [D, fH, fW, 4]


def frustum_to_lidar(frustum: torch.Tensor, geometry: CameraGeometry) -> torch.Tensor:
    """Take frustum points to the augmented lidar frame.

    Args:
        frustum: [D, fH, fW, 4] homogeneous (u, v, d, 1) in augmented-image pixels and metres.
        geometry: batched geometry, tensors [B, N, 4, 4] (``lidar_aug`` [B, 4, 4]).

    Returns:
        [B, N, D, fH, fW, 3] points (x, y, z) in metres, augmented lidar frame.
    """
    undo_img_aug = torch.linalg.inv(geometry.img_aug)  # [B, N, 4, 4]; acts on (u, v), keeps d
    image2lidar = geometry.lidar_aug.unsqueeze(1) @ geometry.camera2lidar @ torch.linalg.inv(geometry.intrinsics)
    points = torch.einsum("bnij,dhwj->bndhwi", undo_img_aug, frustum)  # [B, N, D, fH, fW, 4]
    depth = points[..., 2:3]
    points = torch.cat([points[..., :2] * depth, depth, points[..., 3:]], dim=-1)  # (u·d, v·d, d, 1)
    points = torch.einsum("bnij,bndhwj->bndhwi", image2lidar, points)
    return points[..., :3]


class LSSTransform(nn.Module):
    """Lift-splat view transform with BEVFusion's BEV downsample.

    Args:
        in_channels: channels of the camera feature map (neck output).
        out_channels: BEV context channels ``C`` (80 in BEVFusion).
        image_size: (H, W) network input in pixels.
        feature_stride: input pixels per feature pixel (8 for the first LSS-FPN level).
        xbound, ybound, zbound: BEV voxel grid (lower, upper, step) in metres, lidar frame.
        dbound: depth bins (lower, upper, step) in metres along the optical axis.
        downsample: stride of the BEV conv stack (1 = no downsample stack).
        frustum_pixels: ``centres`` (feature-cell centres) or ``linspace`` (BEVFusion's).
        cell_index: ``floor`` (the cell containing a point) or ``trunc`` (BEVFusion's, toward zero).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        image_size: Sequence[int],
        feature_stride: int,
        xbound: Sequence[float],
        ybound: Sequence[float],
        zbound: Sequence[float],
        dbound: Sequence[float],
        downsample: int = 1,
        frustum_pixels: str = "centres",
        cell_index: str = "floor",
    ):
        super().__init__()
        if cell_index not in CELL_INDEX:
            raise ValueError(f"cell_index must be one of {CELL_INDEX}, got {cell_index!r}")
        self.cell_index = cell_index
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if self.image_size[0] % feature_stride or self.image_size[1] % feature_stride:
            raise InputError(f"image size {self.image_size} must be divisible by the feature stride {feature_stride}")
        self.feature_size = (self.image_size[0] // feature_stride, self.image_size[1] // feature_stride)
        self.x, self.y, self.z, self.depth = Bound.of(xbound), Bound.of(ybound), Bound.of(zbound), Bound.of(dbound)
        self.out_channels = out_channels
        self.register_buffer(
            "frustum",
            make_frustum(image_size=self.image_size, feature_size=self.feature_size, depth=self.depth,
                         pixels=frustum_pixels),
            persistent=False,
        )
        self.depthnet = nn.Conv2d(in_channels, self.depth.cells + out_channels, 1)
        if downsample > 1:
            self.downsample: nn.Module = nn.Sequential(
                conv_bn_relu(out_channels * self.z.cells, out_channels, 3),
                conv_bn_relu(out_channels, out_channels, 3, stride=downsample),
                conv_bn_relu(out_channels, out_channels, 3),
            )
        else:
            self.downsample = nn.Identity()
        self.grid = (self.z.cells, self.x.cells, self.y.cells)  # (Z, X, Y) cells of the splat
        self.bev_size = tuple(-(-n // downsample) for n in self.grid[1:])  # output (X, Y)

    def lift(self, feats: torch.Tensor) -> torch.Tensor:
        """feats [B·N, C_in, fH, fW] → depth-weighted context [B·N, D, fH, fW, C]."""
        x = self.depthnet(feats)  # [B·N, D + C, fH, fW]
        depth = x[:, : self.depth.cells].softmax(dim=1)  # [B·N, D, fH, fW]
        context = x[:, self.depth.cells :].permute(0, 2, 3, 1).contiguous()  # [B·N, fH, fW, C]
        # written once, contiguous, in the channels-last layout bev_pool reads: the splat's reshape
        # is then a view, not a second copy of this (largest) tensor of the model
        return depth.unsqueeze(-1) * context.unsqueeze(1)  # [B·N, D, fH, fW, C]

    def splat(self, lifted: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """lifted [B, N, D, fH, fW, C], points [B, N, D, fH, fW, 3] (m) → BEV [B, C·Z, X, Y]."""
        batch = lifted.shape[0]
        lower = points.new_tensor([self.x.lower, self.y.lower, self.z.lower])
        step = points.new_tensor([self.x.step, self.y.step, self.z.step])
        index = (points - lower) / step  # [B, N, D, fH, fW, 3] (x, y, z) in cells
        # floor: the cell that contains the point; trunc (BEVFusion): toward zero, so points up
        # to one cell below the grid land in cell 0
        cells = (torch.floor(index) if self.cell_index == "floor" else torch.trunc(index)).long()
        batch_index = torch.arange(batch, device=cells.device).view(batch, 1, 1, 1, 1, 1).expand(*cells.shape[:-1], 1)
        coords = torch.cat([cells, batch_index], dim=-1).reshape(-1, 4)  # [B·N·D·fH·fW, 4] (x, y, z, b)
        feats = lifted.reshape(-1, lifted.shape[-1])  # [B·N·D·fH·fW, C]
        bev = bev_pool(feats, coords, batch, self.grid)  # [B, C, Z, X, Y]
        return torch.cat(bev.unbind(dim=2), dim=1)  # [B, C·Z, X, Y]

    def forward(
        self, feats: torch.Tensor, geometry: CameraGeometry, camera_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Camera features → BEV features.

        Args:
            feats: [B, N, C_in, fH, fW] camera features.
            geometry: batched :class:`CameraGeometry` ([B, N, 4, 4] tensors).
            camera_valid: optional bool [B, N]; missing cameras contribute nothing.

        Returns:
            [B, out_channels, X', Y'] BEV features (after the downsample stack).
        """
        batch, cams = feats.shape[:2]
        if tuple(feats.shape[-2:]) != self.feature_size:
            raise InputError(f"camera features are {tuple(feats.shape[-2:])}, expected {self.feature_size}")
        lifted = self.lift(feats.flatten(0, 1))  # [B·N, D, fH, fW, C]
        lifted = lifted.view(batch, cams, *lifted.shape[1:])  # [B, N, D, fH, fW, C]
        if camera_valid is not None:
            lifted = lifted * camera_valid.to(lifted.dtype).view(batch, cams, 1, 1, 1, 1)
        with torch.autocast(device_type=feats.device.type, enabled=False):  # geometry in fp32 even under AMP
            points = frustum_to_lidar(self.frustum.float(), geometry.to(torch.float32))
        return self.downsample(self.splat(lifted, points))
