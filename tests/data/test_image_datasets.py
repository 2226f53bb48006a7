"""Readers of ADE20K, Cityscapes, KITTI Eigen, NYU-Depth v2 and the synthetic export, on tiny fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bev_ddp.data.image_datasets import (
    ADE20K_CLASSES, CITYSCAPES_CLASSES, ade20k_dataset, cityscapes_dataset, depth_split_dataset,
    synthetic_depth_dataset, synthetic_seg_dataset,
)
from bev_ddp.data.image_pipelines import (
    IGNORE_INDEX, DepthPipeline, SegPipeline, rescale_size,
)
from bev_ddp.nn.backbone import IMAGENET_NORMALISATION
from bev_ddp.data.structures import collate_samples
from bev_ddp.errors import InputError


def _rgb(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _denorm(img: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_NORMALISATION.mean).view(3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALISATION.std).view(3, 1, 1)
    return ((img * std + mean) * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)


def test_ade20k_reduce_zero_label(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    rgb = _rgb(root / "images/validation/ADE_val_00000001.png", 4, 6)
    Image.fromarray(rgb).save(root / "images/validation/ADE_val_00000001.jpg", quality=100)
    (root / "images/validation/ADE_val_00000001.png").unlink()
    label = np.array([[0, 1, 150, 2, 2, 0]] * 4, dtype=np.uint8)
    _png(root / "annotations/validation/ADE_val_00000001.png", label)
    ds = ade20k_dataset(root, "val", pipeline=SegPipeline())
    assert len(ds) == 1 and ds.classes == ADE20K_CLASSES and len(ds.classes) == 150
    s = ds[0]
    assert s["gt_seg"][0].tolist() == [IGNORE_INDEX, 0, 149, 1, 1, IGNORE_INDEX]
    assert s["img"].shape == (3, 4, 6) and s["img"].dtype == torch.float32
    assert s["meta"]["name"] == "ADE_val_00000001"


def test_cityscapes_label_ids_are_mapped_and_train_ids_preferred(tmp_path):
    root = tmp_path / "cityscapes"
    _rgb(root / "leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png", 2, 3)
    _png(root / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png",
         np.array([[7, 8, 0], [26, 33, 34]], dtype=np.uint8))
    _rgb(root / "leftImg8bit/val/bonn/bonn_000001_000019_leftImg8bit.png", 2, 3, seed=1)
    _png(root / "gtFine/val/bonn/bonn_000001_000019_gtFine_labelIds.png", np.full((2, 3), 7, dtype=np.uint8))
    _png(root / "gtFine/val/bonn/bonn_000001_000019_gtFine_labelTrainIds.png",
         np.array([[0, 18, 255], [1, 1, 1]], dtype=np.uint8))
    ds = cityscapes_dataset(root, "val", pipeline=SegPipeline())
    assert len(ds) == 2 and len(ds.classes) == len(CITYSCAPES_CLASSES) == 19
    assert ds[0]["gt_seg"].tolist() == [[0, 1, 255], [13, 18, 255]]  # road, sidewalk, unlabeled; car, bicycle, -
    assert ds[1]["gt_seg"].tolist() == [[0, 18, 255], [1, 1, 1]]  # train ids read as they are


def test_cityscapes_missing_ground_truth_names_file(tmp_path):
    root = tmp_path / "cityscapes"
    _rgb(root / "leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png", 2, 3)
    (root / "gtFine/val/aachen").mkdir(parents=True)
    with pytest.raises(InputError, match="aachen_000000_000019_gtFine_labelTrainIds.png"):
        cityscapes_dataset(root, "val", pipeline=SegPipeline())


def _depth_png(path: Path, metres: np.ndarray, scale: float) -> None:
    _png(path, (metres * scale).round().astype(np.uint16))


def test_kitti_eigen_split_file(tmp_path):
    img_rel = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    dep_rel = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    h, w = 360, 1230
    rgb = _rgb(tmp_path / "raw" / img_rel, h, w)
    depth = np.zeros((h, w), np.float32)
    depth[-1, (w - 1216) // 2] = 12.5  # one LiDAR return inside the KITTI benchmark crop
    depth[0, 0] = 30.0                 # outside it
    _depth_png(tmp_path / "gt" / dep_rel, depth, 256.0)
    split = tmp_path / "eigen_test_files_with_gt.txt"
    split.write_text(f"{img_rel} {dep_rel} 721.5377\n{img_rel} None 721.5377\n\n")
    ds = depth_split_dataset(split, image_root=tmp_path / "raw", depth_root=tmp_path / "gt", depth_scale=256.0,
                             pipeline=DepthPipeline(kb_crop=True))
    assert len(ds) == 1  # the frame without ground truth is skipped
    s = ds[0]
    assert s["gt_depth"].shape == (1, 352, 1216) and s["img"].shape == (3, 352, 1216)
    assert s["gt_depth"][0, -1, 0] == 12.5 and int((s["gt_depth"] > 0).sum()) == 1
    assert s["meta"]["focal"] == pytest.approx(721.5377)
    assert s["meta"]["full_size"] == (h, w) and s["meta"]["crop_offset"] == (h - 352, (w - 1216) // 2)
    top, left = h - 352, (w - 1216) // 2
    assert np.abs(_denorm(s["img"]).astype(int) - rgb[top:top + 352, left:left + 1216]).max() <= 1


def test_nyu_split_file_millimetres_and_max_depth(tmp_path):
    _rgb(tmp_path / "sync/kitchen_0028a/rgb_00045.jpg", 8, 10)
    depth = np.full((8, 10), 2.5, np.float32)
    depth[0, 0] = 12.0  # beyond 10 m: invalid
    _depth_png(tmp_path / "sync/kitchen_0028a/sync_depth_00045.png", depth, 1000.0)
    split = tmp_path / "nyudepthv2_train_files_with_gt.txt"
    split.write_text("/kitchen_0028a/rgb_00045.jpg /kitchen_0028a/sync_depth_00045.png 518.8579\n")
    ds = depth_split_dataset(split, image_root=tmp_path / "sync", depth_root=tmp_path / "sync", depth_scale=1000.0,
                             pipeline=DepthPipeline(crop_size=(4, 6)), training=True, seed=3, max_depth=10.0)
    a, b = ds[0], ds[0]
    assert a["gt_depth"].shape == (1, 4, 6)
    assert torch.equal(a["gt_depth"], b["gt_depth"]) and torch.equal(a["img"], b["img"])  # seeded per index
    full = depth_split_dataset(split, image_root=tmp_path / "sync", depth_root=tmp_path / "sync",
                               depth_scale=1000.0, pipeline=DepthPipeline(), max_depth=10.0)[0]
    assert full["gt_depth"][0, 0, 0] == 0.0 and full["gt_depth"][0, 1, 1] == pytest.approx(2.5)


def test_bad_depth_inputs(tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("only_one_column\n")
    with pytest.raises(InputError, match="split.txt:1"):
        depth_split_dataset(split, image_root=tmp_path, depth_root=tmp_path, depth_scale=256.0,
                            pipeline=DepthPipeline())
    split.write_text("a.png b.png\n")
    ds = depth_split_dataset(split, image_root=tmp_path, depth_root=tmp_path, depth_scale=256.0,
                             pipeline=DepthPipeline())
    with pytest.raises(InputError, match="a.png"):
        ds[0]  # missing image
    _rgb(tmp_path / "a.png", 2, 2)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match="b.png"):
        ds[0]  # corrupt depth
    with pytest.raises(InputError, match="not found"):
        depth_split_dataset(tmp_path / "nope.txt", image_root=tmp_path, depth_root=tmp_path, depth_scale=1.0,
                            pipeline=DepthPipeline())


def _export(root: Path, n: int = 2, h: int = 6, w: int = 8) -> None:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps({"classes": ["background", "road", "car"], "depth_scale": 1000}))
    for i in range(n):
        _rgb(root / f"images/train/cam_{i}.jpg", h, w, seed=i)
        label = np.zeros((h, w), np.uint8)
        label[h // 2:, :] = 1
        label[0, 0] = 255
        _png(root / f"labels/train/cam_{i}.png", label)
        depth = np.linspace(1, 40, h * w, dtype=np.float32).reshape(h, w)
        depth[0, :] = 0
        _depth_png(root / f"depth/train/cam_{i}.png", depth, 1000.0)


def test_synthetic_export_readers_and_collate(tmp_path):
    _export(tmp_path)
    seg = synthetic_seg_dataset(tmp_path, "train", pipeline=SegPipeline())
    assert seg.classes == ("background", "road", "car") and len(seg) == 2
    s = seg[1]
    assert s["gt_seg"][0, 0] == IGNORE_INDEX and (s["gt_seg"][3:] == 1).all()
    dep = synthetic_depth_dataset(tmp_path, "train", pipeline=DepthPipeline())
    d = dep[0]
    assert d["gt_depth"][0, 0].eq(0).all() and d["gt_depth"][0, 1, 0] == pytest.approx(1 + 39 / 47 * 8, abs=1e-3)
    batch = collate_samples([seg[0], seg[1]])
    assert batch["img"].shape == (2, 3, 6, 8) and batch["gt_seg"].shape == (2, 6, 8) and len(batch["meta"]) == 2
    assert batch["ori_size"].tolist() == [[6, 8], [6, 8]]


def test_synthetic_export_errors(tmp_path):
    with pytest.raises(InputError, match="meta.json"):
        synthetic_seg_dataset(tmp_path, "train", pipeline=SegPipeline())
    _export(tmp_path)
    (tmp_path / "labels/train/cam_1.png").unlink()
    with pytest.raises(InputError, match="cam_1"):
        synthetic_seg_dataset(tmp_path, "train", pipeline=SegPipeline())
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(InputError, match="meta.json"):
        synthetic_depth_dataset(tmp_path, "train", pipeline=DepthPipeline())


def test_label_out_of_range_names_file(tmp_path):
    _export(tmp_path, n=1)
    _png(tmp_path / "labels/train/cam_0.png", np.full((6, 8), 7, np.uint8))
    with pytest.raises(InputError, match="cam_0.png"):
        synthetic_seg_dataset(tmp_path, "train", pipeline=SegPipeline())[0]


def test_seg_training_pipeline_keeps_image_and_label_aligned(tmp_path):
    """Rescale, crop and flip move the label with the image: a pixel's colour encodes its class."""
    h, w = 12, 16
    label = np.tile(np.arange(w, dtype=np.uint8) // 4, (h, 1))  # classes 0..3 in vertical bands
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = label * 60
    root = tmp_path
    (root / "meta.json").write_text(json.dumps({"classes": ["a", "b", "c", "d"]}))
    _png(root / "images/train/x.png", rgb)
    _png(root / "labels/train/x.png", label)
    pipe = SegPipeline(scale=(16, 12), ratio_range=(1.5, 2.0), crop_size=(8, 8), flip_prob=0.5)
    ds = synthetic_seg_dataset(root, "train", pipeline=pipe, training=True, seed=0)
    flips = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        s = ds[0]
        assert s["gt_seg"].shape == (8, 8)
        red = _denorm(s["img"])[..., 0].astype(int)
        inner = s["gt_seg"][:, 1:-1]  # away from band borders blurred by the bilinear resize
        same_as_left = inner == s["gt_seg"][:, :-2]
        same_as_right = inner == s["gt_seg"][:, 2:]
        keep = (same_as_left & same_as_right).numpy()
        assert keep.any()
        assert np.abs(red[:, 1:-1][keep] - inner.numpy()[keep] * 60).max() <= 2
        flips.add(s["meta"]["flip"])
    assert flips == {True, False}


def test_seg_eval_pipeline_rescales_image_but_not_label(tmp_path):
    _export(tmp_path, n=1, h=6, w=8)
    ds = synthetic_seg_dataset(tmp_path, "train", pipeline=SegPipeline(scale=(16, 12)))
    s = ds[0]
    assert s["img"].shape == (3, 12, 16) and s["gt_seg"].shape == (6, 8) and s["ori_size"].tolist() == [6, 8]
    assert rescale_size((512, 683), (2048, 512)) == (512, 683)
    assert rescale_size((1024, 2048), (2048, 512)) == (512, 1024)


def test_collate_different_sizes_raises():
    a = {"img": torch.zeros(3, 2, 2), "meta": {}}
    b = {"img": torch.zeros(3, 2, 3), "meta": {}}
    with pytest.raises(InputError, match="batch_size 1"):
        collate_samples([a, b])
