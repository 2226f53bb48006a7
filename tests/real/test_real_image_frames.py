"""The real Cityscapes and NYU Depth v2 frames (mmsegmentation fixtures) through our readers and metrics.

Oracles: the label as its own prediction (mIoU 100 / AbsRel 0), and numpy computations by hand of
a shifted label and a scaled depth.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from real_frames import real_path

from bev_ddp.data.image_datasets import cityscapes_items, read_depth, read_label, read_rgb, split_file_items
from bev_ddp.metrics.depth import depth_errors, eval_mask
from bev_ddp.metrics.seg import confusion_matrix, scores_from_confusion

CITYSCAPES_CLASSES = 19
NYU_PNG_SCALE = 1000.0  # configs/depth/*nyu*: uint16 millimetres


def _miou_by_hand(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    ious = []
    valid = gt != 255
    for k in range(num_classes):
        p, g = (pred == k) & valid, (gt == k) & valid
        if (p | g).any():
            ious.append((p & g).sum() / (p | g).sum())
    return float(np.mean(ious))


def test_cityscapes_frame_reads_and_scores():
    (item,) = cityscapes_items(real_path("cityscapes"), "val")
    assert item.label.name.endswith("_labelTrainIds.png")
    image, label = read_rgb(item.image), read_label(item.label)  # [3, H, W] uint8, [H, W] int64
    assert image.shape == (3, 128, 256) and label.shape == (128, 256)
    np.testing.assert_array_equal(label.numpy(), np.asarray(Image.open(item.label)))
    ids = set(label.unique().tolist())
    assert 255 in ids and len(ids - {255}) >= 8  # a real street: many classes and ignored pixels
    perfect = scores_from_confusion(confusion_matrix(label.clone().masked_fill(label == 255, 0), label,
                                                     CITYSCAPES_CLASSES))
    assert perfect.miou == 1.0 and perfect.aacc == 1.0
    shifted = torch.roll(label, shifts=7, dims=1).masked_fill(torch.roll(label, 7, 1) == 255, 0)
    scores = scores_from_confusion(confusion_matrix(shifted, label, CITYSCAPES_CLASSES))
    expected = _miou_by_hand(shifted.numpy(), label.numpy(), CITYSCAPES_CLASSES)
    assert scores.miou == pytest.approx(expected, abs=1e-12) and 0.2 < scores.miou < 0.95


def test_nyu_frame_reads_and_scores(tmp_path):
    nyu = real_path("nyu")
    split = tmp_path / "split.txt"
    split.write_text("bookstore_0001d_00001.jpg bookstore_0001d_00001.png 518.8579\n")
    (item,) = split_file_items(split, image_root=nyu / "images", depth_root=nyu / "annotations")
    image, depth = read_rgb(item.image), read_depth(item.depth, NYU_PNG_SCALE)  # [3, H, W], [H, W] metres
    assert image.shape == (3, 120, 160) and depth.shape == (120, 160) and item.focal == pytest.approx(518.8579)
    raw = np.asarray(Image.open(item.depth)).astype(np.float64)
    np.testing.assert_allclose(depth.numpy(), raw / 1000.0, rtol=1e-6)
    valid = eval_mask(depth, min_depth=1e-3, max_depth=10.0)
    gt = depth[valid]
    assert gt.numel() > 5_000 and 0.5 < float(gt.median()) < 10.0  # a room, metres
    assert depth_errors(gt.clone(), gt)["abs_rel"] == 0.0
    errors = depth_errors(gt * 1.1, gt)
    g = raw[valid.numpy()] / 1000.0
    assert errors["abs_rel"] == pytest.approx(0.1, abs=1e-6)
    assert errors["sq_rel"] == pytest.approx(np.mean((0.1 * g) ** 2 / g), rel=1e-5)
    assert errors["rmse"] == pytest.approx(np.sqrt(np.mean((0.1 * g) ** 2)), rel=1e-5)
    assert errors["d1"] == 1.0  # 1.1 < 1.25
