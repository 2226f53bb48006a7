"""CameraGeometry.project and collate_samples."""
import math

import torch

from bev_ddp.data.structures import CameraGeometry, collate_samples


def _geometry(img_aug: torch.Tensor, lidar_aug: torch.Tensor) -> CameraGeometry:
    k = torch.eye(4)
    k[0, 0], k[1, 1], k[0, 2], k[1, 2] = 100.0, 100.0, 50.0, 40.0
    # camera looks along lidar +x: camera z = lidar x, camera x = -lidar y, camera y = -lidar z
    cam2lidar = torch.eye(4)
    cam2lidar[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cam2lidar[:3, 3] = torch.tensor([1.0, 0.0, 1.5])
    eye = torch.eye(4)
    return CameraGeometry(intrinsics=k[None], camera2lidar=cam2lidar[None], img_aug=img_aug[None],
                          lidar_aug=lidar_aug, camera2ego=eye[None], lidar2ego=eye)


def test_project_matches_pinhole_then_image_augmentation():
    # augmentation: scale 0.5 then crop (shift) by (-10, -5) pixels; a point 11 m ahead, 2 m left, on the ground
    aug = torch.eye(4)
    aug[0, 0] = aug[1, 1] = 0.5
    aug[0, 3], aug[1, 3] = -10.0, -5.0
    geometry = _geometry(aug, torch.eye(4))
    uvd = geometry.project(torch.tensor([[11.0, 2.0, 0.0]]))  # [N=1, P=1, 3]
    depth = 10.0  # 11 m minus the camera's 1 m offset
    u = 100.0 * (-2.0) / depth + 50.0  # camera x = -lidar y
    v = 100.0 * 1.5 / depth + 40.0  # camera y = -(z - 1.5)
    expected = torch.tensor([0.5 * u - 10.0, 0.5 * v - 5.0, depth])
    torch.testing.assert_close(uvd[0, 0], expected)


def test_project_undoes_bev_augmentation():
    rot = torch.eye(4)
    c, s = math.cos(0.3), math.sin(0.3)
    rot[:2, :2] = torch.tensor([[c, -s], [s, c]])
    rot[:3, :3] *= 1.1
    point = torch.tensor([[11.0, 2.0, 0.0]])
    plain = _geometry(torch.eye(4), torch.eye(4)).project(point)
    augmented_point = (rot[:3, :3] @ point.T).T
    torch.testing.assert_close(_geometry(torch.eye(4), rot).project(augmented_point), plain)


def test_collate_stacks_tensors_and_keeps_point_lists():
    geometry = _geometry(torch.eye(4), torch.eye(4))
    samples = [{"img": torch.zeros(1, 3, 4, 4), "geometry": geometry, "points": torch.zeros(n, 5), "meta": {"i": n}}
               for n in (3, 7)]
    batch = collate_samples(samples)
    assert batch["img"].shape == (2, 1, 3, 4, 4)
    assert batch["geometry"].intrinsics.shape == (2, 1, 4, 4)
    assert [p.shape[0] for p in batch["points"]] == [3, 7]
    assert batch["meta"] == [{"i": 3}, {"i": 7}]
