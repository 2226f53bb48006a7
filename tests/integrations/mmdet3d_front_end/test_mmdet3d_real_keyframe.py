"""The real nuScenes keyframe (mmdet3d 1.x info) through mmdet3d's own NuScenes dataset and loaders
into our model: the calibration keys land every LiDAR point where the cameras see it, the maps are finite."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmdet3d_helpers import BEV_CONFIG, ROOT

pytest.importorskip("mmdet3d", reason="the mmdet3d extra is not installed (make mmdet3d)")

KEYFRAME = ROOT.parent / "shared" / "real" / "nuscenes_keyframe"
INFO = KEYFRAME / "n015-2018-07-24-11-22-45+0800.pkl"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


@pytest.fixture(scope="module")
def keyframe_batch(registered):
    if not INFO.is_file():
        pytest.skip(f"real nuScenes keyframe not found at {KEYFRAME} (../shared/real is absent)")
    from mmdet3d.registry import DATASETS, MODELS
    from mmengine.dataset import pseudo_collate

    pipeline = [
        dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=5),
        dict(type="LoadPointsFromMultiSweeps", sweeps_num=9, load_dim=5, use_dim=5, pad_empty_sweeps=False,
             remove_close=True, test_mode=True),  # no sweeps here: sets the keyframe's time lag to 0
        dict(type="LoadMultiViewImageFromFiles", to_float32=True, num_views=6),
        dict(type="BEVDDPImageAug", image_size=[96, 176]),
        dict(type="PackBEVMapInputs", keys=["img", "points"]),
    ]
    dataset = DATASETS.build(dict(type="NuScenesDataset", data_root=str(KEYFRAME) + "/", ann_file=INFO.name,
                                  data_prefix=dict(pts="", sweeps="", **{c: "" for c in CAMERAS}),
                                  pipeline=pipeline, modality=dict(use_lidar=True, use_camera=True),
                                  test_mode=True, box_type_3d="LiDAR"))
    model = MODELS.build(dict(type="BEVDDPMapModel", config=str(BEV_CONFIG), steps=[1, 2])).eval()
    return model, model.data_preprocessor(pseudo_collate([dataset[0]]), training=False)


def test_calibration_keys_put_the_lidar_points_into_every_camera(keyframe_batch):
    model, data = keyframe_batch
    batch = model._batch(data["inputs"], data["data_samples"], with_labels=False)
    assert batch["img"].shape == (1, 6, 3, 96, 176) and batch["points"][0].shape == (34688, 5)
    assert torch.equal(batch["points"][0][:, 4], torch.zeros(34688))  # time lag, not the ring index
    uvd = batch["geometry"].project(batch["points"][0][None, :, :3])[0]  # [N_cam, P, 3]
    inside = (uvd[..., 2] > 1) & (uvd[..., 0] >= 0) & (uvd[..., 0] < 176) & (uvd[..., 1] >= 0) & (uvd[..., 1] < 96)
    per_camera = inside.sum(dim=1)
    print("points inside each camera:", per_camera.tolist())
    assert (per_camera > 2000).all(), per_camera.tolist()  # 3,000-4,800 per camera measured independently


def test_real_keyframe_gives_finite_maps(keyframe_batch):
    model, data = keyframe_batch
    with torch.no_grad():
        sample = model(**data, mode="predict")[0]
    for step in (1, 2):
        probs = sample.pred_masks_bev_steps[step]
        assert probs.shape == (6, 64, 64) and torch.isfinite(probs).all()
        assert 0 <= float(probs.min()) and float(probs.max()) <= 1
        assert torch.isfinite(sample.uncertainty_bev_steps[step]).all()
