"""Helpers of the BEV model tests: a ring of cameras around a LiDAR, random samples, config loading."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from bev_ddp.bev.schema import BEVConfig
from bev_ddp.config import load_config
from bev_ddp.data.structures import CameraGeometry

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "bev"


def ring_geometry(num_cams: int, image_size: tuple[int, int], *, height: float = 1.5) -> CameraGeometry:
    """``num_cams`` pinhole cameras looking outwards at equal yaw steps, image centre on the axis."""
    h, w = image_size
    focal = 0.5 * w
    intrinsics = torch.eye(4).repeat(num_cams, 1, 1)
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focal
    intrinsics[:, 0, 2], intrinsics[:, 1, 2] = (w - 1) / 2, (h - 1) / 2
    camera2lidar = torch.eye(4).repeat(num_cams, 1, 1)
    for i in range(num_cams):
        yaw = 2 * math.pi * i / num_cams
        forward = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
        right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
        down = torch.tensor([0.0, 0.0, -1.0])
        camera2lidar[i, :3, :3] = torch.stack([right, down, forward], dim=1)  # columns: camera axes in lidar
        camera2lidar[i, :3, 3] = torch.tensor([0.0, 0.0, height])
    eye = torch.eye(4)
    return CameraGeometry(
        intrinsics=intrinsics,
        camera2lidar=camera2lidar,
        img_aug=eye.repeat(num_cams, 1, 1),
        lidar_aug=eye.clone(),
        camera2ego=camera2lidar.clone(),
        lidar2ego=eye.clone(),
    )


def random_sample(
    *, image_size: tuple[int, int], num_cams: int = 6, num_points: int = 2000, grid: tuple[int, int] = (200, 200),
    num_classes: int = 6, extent: float = 50.0, seed: int = 0,
) -> dict:
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(num_points, 5, generator=gen)
    points[:, :2] = points[:, :2] * 2 * extent - extent  # x, y in [-extent, extent) m
    points[:, 2] = points[:, 2] * 4 - 2  # z in [-2, 2) m
    return {
        "img": torch.randn(num_cams, 3, *image_size, generator=gen),
        "geometry": ring_geometry(num_cams, image_size),
        "points": points,
        "gt_masks_bev": (torch.rand(num_classes, *grid, generator=gen) > 0.7).float(),
        "camera_valid": torch.ones(num_cams, dtype=torch.bool),
        "meta": {"token": f"sample-{seed}"},
    }


def load_bev_config(name: str, *overrides: str):
    return load_config(CONFIG_DIR / name, list(overrides), schema=BEVConfig)
