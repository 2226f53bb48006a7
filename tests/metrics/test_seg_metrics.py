"""Segmentation metrics against hand-computed values."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from bev_ddp.errors import InputError
from bev_ddp.metrics.seg import SegEvaluator, confusion_matrix, scores_from_confusion

# 2x4 image, classes {0, 1, 2}, one ignored pixel
GT = torch.tensor([[0, 0, 1, 1],
                   [2, 2, 255, 1]])
PRED = torch.tensor([[0, 1, 1, 1],
                     [2, 0, 0, 2]])
# counted pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,2); the ignored pixel is dropped
# class 0: tp 1, gt 2, pred 2 -> IoU 1/3, Acc 1/2
# class 1: tp 2, gt 3, pred 3 -> IoU 2/4, Acc 2/3
# class 2: tp 1, gt 2, pred 2 -> IoU 1/3, Acc 1/2
# aAcc 4/7


def test_confusion_matrix_hand_computed():
    conf = confusion_matrix(PRED, GT, num_classes=3)
    expected = torch.tensor([[1, 1, 0],
                             [0, 2, 1],
                             [1, 0, 1]])
    assert torch.equal(conf, expected)


def test_scores_hand_computed():
    s = scores_from_confusion(confusion_matrix(PRED, GT, num_classes=3))
    assert s.iou == pytest.approx([1 / 3, 2 / 4, 1 / 3])
    assert s.acc == pytest.approx([1 / 2, 2 / 3, 1 / 2])
    assert s.miou == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert s.macc == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert s.aacc == pytest.approx(4 / 7)


def test_absent_class_is_nan_and_excluded_from_means():
    gt = torch.tensor([[0, 0, 1]])
    pred = torch.tensor([[0, 0, 1]])
    s = scores_from_confusion(confusion_matrix(pred, gt, num_classes=4))
    assert s.iou[:2] == [1.0, 1.0] and math.isnan(s.iou[2]) and math.isnan(s.iou[3])
    assert s.miou == 1.0 and s.macc == 1.0


def test_class_only_predicted_has_zero_iou_and_nan_acc():
    gt = torch.tensor([[0, 0]])
    pred = torch.tensor([[0, 1]])
    s = scores_from_confusion(confusion_matrix(pred, gt, num_classes=2))
    assert s.iou == pytest.approx([0.5, 0.0])
    assert s.acc[0] == 0.5 and math.isnan(s.acc[1])
    assert s.miou == pytest.approx(0.25)


def test_bad_ids_raise():
    with pytest.raises(InputError, match="ground truth"):
        confusion_matrix(torch.tensor([[0]]), torch.tensor([[7]]), num_classes=3)
    with pytest.raises(InputError, match="prediction"):
        confusion_matrix(torch.tensor([[5]]), torch.tensor([[0]]), num_classes=3)
    with pytest.raises(InputError, match="shape"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), num_classes=3)


def _pred(labels, uncertainty):
    return SimpleNamespace(labels=labels, uncertainty=uncertainty)


def test_evaluator_accumulates_over_batches_and_steps():
    ev = SegEvaluator(num_classes=3, steps=[1, 3], class_names=["a", "b", "c"], num_vis=1)
    # the split is GT split in two batches of one row each; step 3 predicts perfectly
    for row in range(2):
        gt = GT[None, row:row + 1]  # [B=1, H=1, W=4]
        preds = {1: _pred(PRED[None, row:row + 1], torch.zeros(1, 1, 4)),
                 3: _pred(torch.where(gt == 255, 0, gt), torch.zeros(1, 1, 4))}
        ev.process({"gt_seg": gt, "meta": [{"name": f"r{row}"}]}, preds)
    out = ev.evaluate()
    assert out["steps"]["1"]["summary"]["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert out["steps"]["1"]["summary"]["aAcc"] == pytest.approx(4 / 7)
    assert out["steps"]["1"]["per_class"]["b"] == pytest.approx(0.5)
    assert out["steps"]["1"]["per_class_acc"]["b"] == pytest.approx(2 / 3)
    assert out["steps"]["3"]["summary"]["mIoU"] == pytest.approx(1.0)
    assert out["num_samples"] == 2
    vis = ev.visuals()
    assert vis["gt"].shape == (1, 1, 4) and vis["pred_3"].shape == (1, 1, 4)
    ev.reset()
    ev.process({"gt_seg": GT[None]}, {1: _pred(PRED[None], torch.zeros(1, 2, 4)),
                                      3: _pred(PRED[None], torch.zeros(1, 2, 4))})
    assert ev.evaluate()["steps"]["3"]["summary"]["aAcc"] == pytest.approx(4 / 7)


def test_evaluator_uncertainty_auroc_ignores_ignored_pixels():
    ev = SegEvaluator(num_classes=3, steps=[2])
    # uncertainty 1 exactly on the three wrong pixels, 0 elsewhere; the ignored pixel is uncertain too
    wrong = (PRED != GT) & (GT != 255)
    unc = (wrong | (GT == 255)).float()
    ev.process({"gt_seg": GT[None]}, {2: _pred(PRED[None], unc[None])})
    stats = ev.evaluate()["steps"]["2"]["uncertainty"]
    assert stats["auroc"] == pytest.approx(1.0)
    assert sum(stats["pixels"]) == 7 and sum(stats["errors"]) == 3


def test_evaluator_missing_step_raises():
    ev = SegEvaluator(num_classes=3, steps=[1, 3])
    with pytest.raises(InputError, match="3 sampling steps"):
        ev.process({"gt_seg": GT[None]}, {1: _pred(PRED[None], torch.zeros(1, 2, 4))})
