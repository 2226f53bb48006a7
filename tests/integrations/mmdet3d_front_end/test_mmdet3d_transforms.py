"""Map labels and BEV augmentation matrices of the mmdet3d pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdet3d_helpers import BEV_CONFIG

pytest.importorskip("mmdet3d", reason="the mmdet3d extra is not installed (make mmdet3d)")


def test_lidar_aug_matrix_follows_mmdet3ds_rotation_scale_translation_and_flips(registered):
    """The composed matrix maps the original points onto the points mmdet3d's transforms moved."""
    from mmdet3d.datasets.transforms import GlobalRotScaleTrans, RandomFlip3D
    from mmdet3d.structures import LiDARPoints

    from bev_ddp.integrations.mmdet3d.transforms import lidar_aug_matrix

    np.random.seed(5)
    xyz = np.random.uniform(-30, 30, (200, 3)).astype(np.float32)
    results = {"points": LiDARPoints(np.concatenate([xyz, np.zeros((200, 2), np.float32)], 1), points_dim=5)}
    results = GlobalRotScaleTrans(rot_range=[-0.8, 0.8], scale_ratio_range=[0.9, 1.1],
                                  translation_std=[0.5, 0.5, 0.2])(results)
    results = RandomFlip3D(sync_2d=False, flip_ratio_bev_horizontal=1.0, flip_ratio_bev_vertical=1.0)(results)
    assert results["transformation_3d_flow"] == ["R", "S", "T", "HF", "VF"]
    m = lidar_aug_matrix(results)
    moved = xyz.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(moved, results["points"].tensor[:, :3].numpy(), atol=1e-4)
    assert not np.allclose(m, np.eye(4))
    given = {"lidar_aug_matrix": np.diag([2.0, 2.0, 2.0, 1.0]), **results}
    np.testing.assert_array_equal(lidar_aug_matrix(given), np.diag([2.0, 2.0, 2.0, 1.0]))


@pytest.mark.parametrize("mode", ["centres", "bevfusion"])
def test_map_labels_equal_our_datasets_under_a_bev_augmentation(registered, mmdet3d_world, mode):
    """``BEVMapLabels`` on mmdet3d's info record (ego2global, lidar2ego from the .pkl) gives our dataset's
    ``gt_masks_bev`` for the same BEV augmentation; without ``location`` it reads the nuScenes tables."""
    from mmdet3d.registry import DATASETS

    from bev_ddp.bev.task import TASK
    from bev_ddp.config import load_config
    from bev_ddp.integrations.mmdet3d.transforms import BEVMapLabels

    cfg = load_config(BEV_CONFIG, [f"data.dataroot={mmdet3d_world}", f"data.map_raster={mode}"], schema=TASK.schema)
    ours = TASK.build_dataset(cfg, "train")  # training: a random BEV augmentation per sample
    sample = ours[1]
    aug = sample["geometry"].lidar_aug.double().numpy()
    assert not np.allclose(aug, np.eye(4))
    infos = DATASETS.build(dict(type="NuScenesDataset", data_root=str(mmdet3d_world) + "/",
                                ann_file="infos/mmdet3d_infos_train.pkl", pipeline=[], test_mode=True,
                                data_prefix=dict(pts="samples/LIDAR_TOP", sweeps="sweeps/LIDAR_TOP"),
                                modality=dict(use_lidar=True, use_camera=False)))
    labels = BEVMapLabels(str(mmdet3d_world), classes=list(cfg.data.classes), xbound=list(cfg.data.xbound),
                          ybound=list(cfg.data.ybound), map_raster=mode, version="v1.0-mini")
    record = infos.get_data_info(1)
    assert record["token"] == sample["meta"]["token"]
    got = labels({**record, "lidar_aug_matrix": aug})["gt_masks_bev"]
    assert torch.equal(torch.from_numpy(got).float(), sample["gt_masks_bev"]) and got.any()
    del record["location"]  # as in mmdet3d's own info files: found through sample -> scene -> log
    assert np.array_equal(labels({**record, "lidar_aug_matrix": aug})["gt_masks_bev"], got)
    assert not np.array_equal(labels({**record})["gt_masks_bev"], got)  # the augmentation matters
