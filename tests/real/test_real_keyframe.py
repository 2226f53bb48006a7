"""The real nuScenes keyframe (imported from mmdet3d's pickle) through the dataset and the full
nuScenes fusion config.

Oracles: mmdet3d's ``lidar2cam`` · ``cam2img`` for the projection; the LiDAR points themselves for
the frustum round trip; the real drivable area for the labels the dataset draws.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from real_frames import KEYFRAME_PKL, keyframe_dataroot, real_path, trusted_pickle

from bev_ddp.bev.camera.view_transform import frustum_to_lidar
from bev_ddp.data.lidar_io import load_points
from bev_ddp.data.nuscenes import NuScenesBEVDataset
from bev_ddp.data.sensors import CAMERA_NAMES
from bev_ddp.data.structures import CameraGeometry, collate_samples

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bev" / "nuscenes_fusion_ddp.yaml"


@pytest.fixture(scope="module")
def keyframe(tmp_path_factory):
    root, info = keyframe_dataroot(tmp_path_factory.mktemp("real_keyframe"))
    dataset = NuScenesBEVDataset(info, root, image_size=(256, 704), load_sweeps=10)
    return root, dataset[0]


def _visible(uvd: torch.Tensor, size=(256, 704)) -> torch.Tensor:
    return (uvd[..., 2] > 1.0) & (uvd[..., 0] >= 0) & (uvd[..., 0] < size[1]) & (uvd[..., 1] >= 0) & (uvd[..., 1] < size[0])


def test_projection_matches_mmdet3d_lidar2cam_and_cam2img(keyframe):
    root, sample = keyframe
    raw = trusted_pickle(real_path(KEYFRAME_PKL))["data_list"][0]
    points = load_points(root / raw["lidar_points"]["lidar_path"])[:, :3].astype(np.float64)  # [P, 3] lidar
    geometry = sample["geometry"].to(torch.float64)
    ours = geometry.project(torch.from_numpy(points))  # [N_cam, P, 3] augmented pixels, depth
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    for n, cam in enumerate(CAMERA_NAMES):
        k = np.asarray(raw["images"][cam]["cam2img"])
        cam_pts = (np.asarray(raw["images"][cam]["lidar2cam"]) @ homogeneous.T)[:3]  # [3, P] camera frame
        uv = (k @ cam_pts)[:2] / cam_pts[2]
        uvd = np.stack([uv[0], uv[1], cam_pts[2], np.ones_like(uv[0])])  # original image, then the batch's img_aug
        expected = torch.from_numpy((geometry.img_aug[n].numpy() @ uvd)[:3].T)  # [P, 3]
        seen = _visible(expected)
        assert seen.sum() > 2000, cam  # every camera sees thousands of returns
        assert (ours[n][seen] - expected[seen])[:, :2].abs().max() <= 0.01, cam
        assert torch.allclose(ours[n][seen][:, 2], expected[seen][:, 2], atol=1e-6)


def test_frustum_round_trip_returns_the_lidar_points(keyframe):
    _, sample = keyframe
    points = sample["points"][:, :3].double()  # keyframe and sweeps, lidar frame (eval: no BEV augmentation)
    geometry = CameraGeometry.stack([sample["geometry"].to(torch.float64)])
    uvd = geometry.project(points.unsqueeze(0))[0]  # [N_cam, P, 3]
    frustum = torch.cat([uvd, torch.ones_like(uvd[..., :1])], dim=-1)  # [N, P, 4]
    for n in range(len(CAMERA_NAMES)):
        seen = _visible(uvd[n])
        back = frustum_to_lidar(frustum[n][seen].view(-1, 1, 1, 4), geometry)[0, n, :, 0, 0]  # [P_seen, 3]
        assert seen.sum() > 2000 and (back - points[seen]).abs().max() <= 1e-3


def test_dataset_sample_of_the_real_keyframe(keyframe):
    _, sample = keyframe
    assert sample["img"].shape == (6, 3, 256, 704) and bool(sample["camera_valid"].all())
    assert sample["points"].shape[0] >= 34_000 and sample["points"].shape[1] == 5  # the full sweep
    labels = sample["gt_masks_bev"]
    assert labels.shape == (6, 200, 200) and 0.15 < labels[0].mean() < 0.20  # the real drivable area
    assert labels[0, 98:102, 98:102].all()  # the car is on it


@pytest.mark.slow
def test_nuscenes_fusion_config_predicts_on_the_real_keyframe(keyframe):
    from bev_ddp import init_model, inference_bev

    torch.manual_seed(0)
    model = init_model(CONFIG)  # initial weights: the check is the data path, not the quality
    prediction = inference_bev(model, collate_samples([keyframe[1]]), steps=1)
    assert prediction.probs.shape == (1, 6, 200, 200)
    assert torch.isfinite(prediction.probs).all() and (prediction.probs >= 0).all() and (prediction.probs <= 1).all()
