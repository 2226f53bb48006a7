"""prepare → NuScenesBEVDataset → collate, augmentation alignment and bad input."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from bev_ddp.data.infos import read_infos
from bev_ddp.data.nuscenes import AugConfig, NuScenesBEVDataset
from bev_ddp.nn.backbone import IMAGENET_NORMALISATION
from bev_ddp.data.sensors import CAMERA_NAMES
from bev_ddp.data.structures import CameraGeometry, collate_samples
from bev_ddp.data.synthetic.render import PAINTS
from bev_ddp.data.transforms import BEVAugConfig
from bev_ddp.errors import InputError

SIZE = (64, 176)


def _dataset(infos, world, **kwargs):
    kwargs.setdefault("image_size", SIZE)
    return NuScenesBEVDataset(infos["train"], world, **kwargs)


def test_one_batch_end_to_end(infos, world):
    meta, records = read_infos(infos["train"])
    assert meta["split_source"] == "deterministic" and meta["split_scenes"] == {"train": ["synth-0000"],
                                                                               "val": ["synth-0001"]}
    ds = _dataset(infos, world, training=True)
    batch = collate_samples([ds[0], ds[1]])
    assert batch["img"].shape == (2, 6, 3, *SIZE) and batch["img"].dtype == torch.float32
    geom = batch["geometry"]
    assert isinstance(geom, CameraGeometry)
    assert geom.intrinsics.shape == geom.camera2lidar.shape == geom.img_aug.shape == (2, 6, 4, 4)
    assert geom.lidar_aug.shape == geom.lidar2ego.shape == (2, 4, 4)
    assert batch["gt_masks_bev"].shape == (2, 6, 200, 200)
    assert set(batch["gt_masks_bev"].unique().tolist()) == {0.0, 1.0}
    assert batch["camera_valid"].all()
    points = batch["points"][0]
    assert points.ndim == 2 and points.shape[1] == 5 and points.dtype == torch.float32
    lags = points[:, 4].unique()
    assert len(lags) == 10 and lags.min() == 0 and abs(float(lags.max()) - 0.45) < 1e-6
    assert len(records[0]["sweeps"]) == 9 and len(records[1]["sweeps"]) == 10


def test_sweeps_are_moved_into_the_keyframe_frame(infos, world):
    """The static ground seen by every sweep lands at the same height as the keyframe's."""
    sample = _dataset(infos, world)[2]
    points = sample["points"].numpy()
    ground = points[points[:, 2] < -1.0]
    for lag in np.unique(ground[:, 4]):
        assert abs(float(np.median(ground[ground[:, 4] == lag, 2])) + 1.84) < 0.03


def test_eval_mode_is_deterministic_and_training_draws_per_epoch(infos, world):
    ds = _dataset(infos, world)
    a, b = ds[1], ds[1]
    assert torch.equal(a["img"], b["img"]) and torch.equal(a["points"], b["points"])
    assert torch.equal(a["geometry"].lidar_aug, torch.eye(4))
    train = _dataset(infos, world, training=True, seed=5)
    first, again = train[1], train[1]
    assert torch.equal(first["geometry"].img_aug, again["geometry"].img_aug)
    assert torch.equal(first["gt_masks_bev"], again["gt_masks_bev"])
    train.set_epoch(1)
    assert not torch.equal(train[1]["geometry"].lidar_aug, first["geometry"].lidar_aug)


def _ground_agreement(points, masks, lidar_aug):
    """Fraction of walkway-intensity ground points that fall on walkway label cells."""
    z_ground = lidar_aug[2, 2] * -1.84 + lidar_aug[2, 3]
    lo, hi = PAINTS["walkway"][1] - 8, PAINTS["walkway"][1] + 8
    sel = (np.abs(points[:, 2] - z_ground) < 0.2) & (points[:, 3] > lo) & (points[:, 3] < hi)
    i = np.floor((points[sel, 0] + 50) / 0.5).astype(int)
    j = np.floor((points[sel, 1] + 50) / 0.5).astype(int)
    ok = (i >= 0) & (i < 200) & (j >= 0) & (j < 200)
    return masks[2][i[ok], j[ok]].mean(), int(ok.sum())


def test_augmented_points_and_labels_stay_aligned(infos, world):
    plain = _dataset(infos, world, load_sweeps=1)[1]
    strong = AugConfig(bev=BEVAugConfig(rotate_deg=(15.0, 40.0), scale_range=(0.8, 1.2),
                                        translation_std=(2.0, 2.0, 0.3)))
    train = _dataset(infos, world, training=True, load_sweeps=1, seed=11, aug=strong)
    for epoch in range(3):
        train.set_epoch(epoch)
        sample = train[1]
        aug = sample["geometry"].lidar_aug.double().numpy()
        assert not np.allclose(aug, np.eye(4))
        agree, count = _ground_agreement(sample["points"].numpy(), sample["gt_masks_bev"].numpy() > 0, aug)
        assert count > 200 and agree > 0.9
        # control: augmented points on the un-augmented labels do not line up
        wrong, _ = _ground_agreement(sample["points"].numpy(), plain["gt_masks_bev"].numpy() > 0, aug)
        assert wrong < agree - 0.2


def test_image_augmentation_matrix_maps_map_points_into_the_augmented_image(infos, world, walkway_points):
    """Walkway pixels found through geometry (K, camera→lidar, img_aug) in the augmented tensors."""
    walk = walkway_points
    info = read_infos(infos["train"])[1][1]
    global2lidar = np.linalg.inv(np.asarray(info["ego2global"]) @ np.asarray(info["lidar2ego"]))
    pts = np.c_[walk, np.zeros(len(walk)), np.ones(len(walk))] @ global2lidar.T  # [N, 4] lidar frame
    train = _dataset(infos, world, training=True, seed=2)
    walkway = (torch.tensor(PAINTS["walkway"][0]) / 255.0).view(3, 1)
    hits = misses = 0
    for epoch in range(2):
        train.set_epoch(epoch)
        sample = train[1]
        g = sample["geometry"]
        lidar_aug = g.lidar_aug.double().numpy()
        for c in range(6):
            cam = np.linalg.inv(g.camera2lidar[c].double().numpy()) @ np.linalg.inv(lidar_aug) @ (lidar_aug @ pts.T)
            ahead = (cam[2] > 1.0) & (cam[2] < 15.0)
            uvd = g.intrinsics[c].double().numpy()[:3, :3] @ cam[:3, ahead]
            uv1 = np.stack([uvd[0] / uvd[2], uvd[1] / uvd[2], uvd[2], np.ones(uvd.shape[1])])
            aug_uv = g.img_aug[c].double().numpy() @ uv1
            u, v = aug_uv[0].astype(int), aug_uv[1].astype(int)
            inside = (u >= 1) & (u < SIZE[1] - 1) & (v >= 1) & (v < SIZE[0] - 1)
            norm = IMAGENET_NORMALISATION
            rgb = sample["img"][c] * torch.tensor(norm.std).view(3, 1, 1) + torch.tensor(norm.mean).view(3, 1, 1)
            pix = rgb[:, v[inside], u[inside]]
            close = (pix - walkway).norm(dim=0) < 0.15
            hits += int(close.sum())
            misses += int((~close).sum())
    assert hits > 20 and hits > 2 * misses


def _patched_infos(infos, tmp_path, edit):
    """The edited records as plain JSON (write_infos would refuse a bad one before the dataset sees it)."""
    meta, records = read_infos(infos["train"])
    edit(records[1])
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({"metadata": meta, "infos": records}))
    return path


def test_missing_or_corrupt_camera_gives_zero_image_and_warning(infos, scratch_root, tmp_path, caplog):
    (scratch_root / "broken" / "garbage.jpg").write_bytes(b"not a jpeg at all")

    def edit(record):
        record["cams"]["CAM_BACK"]["path"] = "broken/nothing.jpg"
        record["cams"]["CAM_FRONT_LEFT"]["path"] = "broken/garbage.jpg"

    ds = NuScenesBEVDataset(_patched_infos(infos, tmp_path, edit), scratch_root, image_size=SIZE)
    with caplog.at_level(logging.WARNING):
        sample = ds[1]
    bad = {CAMERA_NAMES.index("CAM_BACK"), CAMERA_NAMES.index("CAM_FRONT_LEFT")}
    assert sample["camera_valid"].tolist() == [i not in bad for i in range(6)]
    assert all(torch.count_nonzero(sample["img"][i]) == 0 for i in bad)
    assert torch.count_nonzero(sample["img"][0]) > 0
    assert "broken/nothing.jpg" in caplog.text and "broken/garbage.jpg" in caplog.text
    assert sorted(sample["meta"]["missing_cameras"]) == ["CAM_BACK", "CAM_FRONT_LEFT"]
    assert sample["gt_masks_bev"].sum() > 0 and len(sample["points"]) > 0


def test_dataset_pickles_without_its_map_cache_and_checks_arguments(infos, world):
    import pickle

    ds = _dataset(infos, world, with_labels=True)
    first = ds[0]
    assert ds._maps
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._maps and torch.equal(clone[0]["gt_masks_bev"], first["gt_masks_bev"])
    assert "gt_masks_bev" not in _dataset(infos, world, with_labels=False)[0]
    with pytest.raises(ValueError, match="lane"):
        _dataset(infos, world, classes=("drivable_area", "lane"))


def test_missing_or_truncated_sweeps_are_skipped(infos, world, scratch_root, tmp_path, caplog):
    full = NuScenesBEVDataset(infos["train"], world, image_size=SIZE)[1]
    sweep = read_infos(infos["train"])[1][1]["sweeps"][0]["path"]
    data = (world / sweep).read_bytes()
    (scratch_root / "broken" / "short.pcd.bin").write_bytes(data[: len(data) - 6])

    def edit(record):
        record["sweeps"][0]["path"] = "broken/short.pcd.bin"
        record["sweeps"][1]["path"] = "broken/absent.pcd.bin"

    ds = NuScenesBEVDataset(_patched_infos(infos, tmp_path, edit), scratch_root, image_size=SIZE)
    with caplog.at_level(logging.WARNING):
        sample = ds[1]
    assert "short.pcd.bin" in caplog.text and "absent.pcd.bin" in caplog.text
    assert sample["meta"]["skipped_sweeps"] == ["broken/short.pcd.bin", "broken/absent.pcd.bin"]
    assert 0 < len(sample["points"]) < len(full["points"])
    assert torch.equal(sample["gt_masks_bev"], full["gt_masks_bev"])


def test_truncated_keyframe_lidar_raises_or_degrades(infos, world, scratch_root, tmp_path, caplog):
    key = read_infos(infos["train"])[1][1]["lidar_path"]
    data = (world / key).read_bytes()
    (scratch_root / "broken" / "key.pcd.bin").write_bytes(data[:-3])
    path = _patched_infos(infos, tmp_path, lambda r: r.update(lidar_path="broken/key.pcd.bin"))
    with pytest.raises(InputError, match="key.pcd.bin"):
        NuScenesBEVDataset(path, scratch_root, image_size=SIZE)[1]
    ds = NuScenesBEVDataset(path, scratch_root, image_size=SIZE, allow_missing_lidar=True)
    with caplog.at_level(logging.WARNING):
        sample = ds[1]
    assert sample["meta"]["lidar_missing"] and "key.pcd.bin" in caplog.text
    assert (sample["points"][:, 4] > 0).all()  # only sweeps are left


def test_unknown_location_and_bad_info_file_name_the_input(infos, world, tmp_path):
    path = _patched_infos(infos, tmp_path, lambda r: r.update(location="atlantis"))
    with pytest.raises(InputError, match="atlantis"):
        NuScenesBEVDataset(path, world, image_size=SIZE)[1]
    bad = tmp_path / "bad.json"
    bad.write_text('{"infos": [')
    with pytest.raises(InputError, match="bad.json"):
        NuScenesBEVDataset(bad, world)
    bad.write_text(json.dumps({"infos": [{"token": "x"}]}))
    with pytest.raises(InputError, match="lacks"):
        NuScenesBEVDataset(bad, world)


def test_bad_matrices_in_infos_name_the_field(infos, world, tmp_path):
    def poison(record):
        record["cams"]["CAM_BACK"]["camera2lidar"][0][1] = float("nan")

    path = _patched_infos(infos, tmp_path, poison)
    with pytest.raises(InputError, match="CAM_BACK.camera2lidar"):
        NuScenesBEVDataset(path, world)
    path = _patched_infos(infos, tmp_path, lambda r: r.update(lidar2ego=[[1, 0], [0, 1]]))
    with pytest.raises(InputError, match="lidar2ego"):
        NuScenesBEVDataset(path, world)
