"""Geometry of the LSS view transform: frustum points land where the camera sees them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bev_ddp.bev.camera.view_transform import Bound, LSSTransform, frustum_to_lidar, make_frustum
from bev_ddp.data.structures import CameraGeometry
from bev_ddp.data.transforms import BEVAugConfig, ImageAugConfig, bev_aug_matrix, image_aug_matrix, to_img_aug4

from bev_test_helpers import ring_geometry  # noqa: I001

pytestmark = pytest.mark.filterwarnings("ignore::bev_ddp.ops.ExtensionFallbackWarning")


def _augmented_geometry(seed: int = 3) -> CameraGeometry:
    """Ring cameras of 225×400 source images, augmented to 96×176 with random resize/crop/flip/rotation
    and a random BEV rotation/scale/flip/translation (the data pipeline's own matrices)."""
    gen = torch.Generator().manual_seed(seed)
    geometry = ring_geometry(6, (225, 400))
    img_aug = [to_img_aug4(image_aug_matrix((225, 400), (96, 176), ImageAugConfig(flip=1.0), gen)) for _ in range(6)]
    geometry.img_aug = torch.tensor(np.stack(img_aug), dtype=torch.float32)
    lidar_aug = bev_aug_matrix(BEVAugConfig(flip_x=1.0, flip_y=0.0), gen)
    geometry.lidar_aug = torch.tensor(lidar_aug, dtype=torch.float32)
    return geometry


def _project(points: torch.Tensor, geometry: CameraGeometry, cam: int) -> torch.Tensor:
    """Augmented-lidar points [N, 3] → (u, v, d) in camera ``cam``'s augmented image, step by step."""
    homog = torch.cat([points, torch.ones(len(points), 1)], dim=1).double()  # [N, 4]
    lidar = homog @ torch.linalg.inv(geometry.lidar_aug.double()).T  # undo the BEV augmentation
    camera = lidar @ torch.linalg.inv(geometry.camera2lidar[cam].double()).T
    pixels = camera @ geometry.intrinsics[cam].double().T  # (u·z, v·z, z, 1)
    depth = pixels[:, 2:3]
    original = torch.cat([pixels[:, :2] / depth, depth, torch.ones_like(depth)], dim=1)  # (u, v, d, 1)
    return (original @ geometry.img_aug[cam].double().T)[:, :3]


def test_frustum_points_project_back_to_their_pixel_and_depth():
    geometry = _augmented_geometry()
    frustum = make_frustum(image_size=(96, 176), feature_size=(12, 22), depth=Bound(1.0, 41.0, 1.25))
    assert frustum.shape == (32, 12, 22, 4)
    # pixel-edge convention: the first feature column covers input columns [0, 8): centre 4.0
    assert frustum[0, 0, 0, 0] == 4.0 and frustum[0, 0, -1, 0] == 176 - 4.0 and frustum[-1, 0, 0, 2] == 39.75
    batched = CameraGeometry(**{k: v.unsqueeze(0) for k, v in vars(geometry).items()})
    points = frustum_to_lidar(frustum, batched)  # [1, 6, D, fH, fW, 3]
    assert points.shape == (1, 6, 32, 12, 22, 3)
    for cam in (0, 3, 5):
        uvd = _project(points[0, cam].reshape(-1, 3), geometry, cam)
        torch.testing.assert_close(uvd.float(), frustum[..., :3].reshape(-1, 3), rtol=1e-4, atol=2e-3)


def test_forward_camera_sees_the_road_ahead():
    """Without augmentation, a pixel below the horizon of the front camera maps ahead of the car,
    at the ground distance its depth implies."""
    geometry = ring_geometry(6, (96, 176), height=1.5)
    frustum = make_frustum(image_size=(96, 176), feature_size=(12, 22), depth=Bound(1.0, 41.0, 1.25))
    batched = CameraGeometry(**{k: v.unsqueeze(0) for k, v in vars(geometry).items()})
    points = frustum_to_lidar(frustum, batched)[0, 0]  # front camera (yaw 0): [D, fH, fW, 3]
    centre_row, centre_col = 11, 10  # lowest feature row, a central column
    ray = points[:, centre_row, centre_col]  # [D, 3]
    assert bool((ray[:, 0] > 0).all())  # ahead
    assert bool((ray[1:, 2] < ray[:-1, 2]).all())  # farther bins lie lower (the ray points down)
    # depth is along the optical axis (lidar x for the front camera)
    torch.testing.assert_close(ray[:, 0], frustum[:, centre_row, centre_col, 2], rtol=1e-5, atol=1e-5)


def test_splat_sums_features_into_the_cell_under_each_point():
    vt = LSSTransform(in_channels=4, out_channels=2, image_size=(16, 16), feature_stride=8, xbound=(-4, 4, 1),
                      ybound=(-4, 4, 1), zbound=(-2, 2, 4), dbound=(1, 3, 1), downsample=1)
    lifted = torch.zeros(1, 1, 2, 2, 2, 2)  # [B, N, D, fH, fW, C]
    points = torch.zeros(1, 1, 2, 2, 2, 3)
    lifted[0, 0, 0, 0, 0] = torch.tensor([1.0, 2.0])
    points[0, 0, 0, 0, 0] = torch.tensor([-3.5, 2.2, 0.0])  # cell (0, 6)
    lifted[0, 0, 1, 0, 0] = torch.tensor([3.0, 4.0])
    points[0, 0, 1, 0, 0] = torch.tensor([-3.9, 2.9, 1.0])  # the same cell: summed
    lifted[0, 0, 0, 1, 1] = torch.tensor([5.0, 6.0])
    points[0, 0, 0, 1, 1] = torch.tensor([-0.5, -0.01, 0.0])  # just below 0: cell (3, 3), not (3, 4)
    lifted[0, 0, 1, 1, 1] = torch.tensor([7.0, 8.0])
    points[0, 0, 1, 1, 1] = torch.tensor([4.5, 0.0, 0.0])  # outside: dropped
    bev = vt.splat(lifted, points)  # [1, 2, 8, 8]
    expected = torch.zeros(1, 2, 8, 8)
    expected[0, :, 0, 6] = torch.tensor([4.0, 6.0])
    expected[0, :, 3, 3] = torch.tensor([5.0, 6.0])
    # every other frustum point sits at the origin: cell (4, 4) with zero features
    torch.testing.assert_close(bev, expected)


def test_lift_is_the_depth_context_outer_product_channels_last():
    """lift writes [B·N, D, fH, fW, C] contiguous, so the splat reshapes it without a copy."""
    torch.manual_seed(0)
    vt = LSSTransform(in_channels=4, out_channels=3, image_size=(16, 24), feature_stride=8, xbound=(-4, 4, 1),
                      ybound=(-4, 4, 1), zbound=(-2, 2, 4), dbound=(1, 6, 1), downsample=1)
    feats = torch.randn(2, 4, 2, 3)
    lifted = vt.lift(feats)
    assert lifted.shape == (2, 5, 2, 3, 3) and lifted.is_contiguous()
    x = vt.depthnet(feats)
    depth, context = x[:, :5].softmax(1), x[:, 5:]
    expected = torch.einsum("ndhw,nchw->ndhwc", depth, context)
    torch.testing.assert_close(lifted, expected)
    assert lifted.reshape(-1, 3).data_ptr() == lifted.data_ptr()  # a view


def test_view_transform_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible"):
        LSSTransform(in_channels=4, out_channels=2, image_size=(100, 176), feature_stride=8, xbound=(-4, 4, 1),
                     ybound=(-4, 4, 1), zbound=(-2, 2, 4), dbound=(1, 3, 1))
    with pytest.raises(ValueError, match="bound"):
        Bound.of((4, -4, 1))
    assert math.isclose(Bound.of((-51.2, 51.2, 0.4)).cells, 256)
