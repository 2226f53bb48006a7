"""BEV IoU (BEVFusion protocol) and uncertainty statistics, checked against hand counts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bev_ddp.metrics.bev_iou import DEFAULT_THRESHOLDS, BEVIoUEvaluator
from bev_ddp.metrics.uncertainty import UncertaintyHistogram


@dataclass
class Pred:
    probs: torch.Tensor
    uncertainty: torch.Tensor | None = None


def test_counts_accumulate_over_the_split_not_per_sample():
    ev = BEVIoUEvaluator(classes=["a"], steps=[1], thresholds=(0.4, 0.5, 0.6))
    # sample 1: 4 cells gt=1, predicted 0.55 on all 4 -> at 0.5 tp=4; sample 2: gt empty, 1 false positive 0.45
    gt1 = torch.ones(1, 1, 2, 2)
    p1 = torch.full((1, 1, 2, 2), 0.55)
    gt2 = torch.zeros(1, 1, 2, 2)
    p2 = torch.tensor([[[[0.45, 0.0], [0.0, 0.0]]]])
    ev.process({"gt_masks_bev": gt1}, {1: Pred(p1)})
    ev.process({"gt_masks_bev": gt2}, {1: Pred(p2)})
    m = ev.evaluate()["steps"]["1"]
    # t=0.4: tp 4, fp 1 -> 0.8; t=0.5: tp 4 -> 1.0; t=0.6: tp 0, fn 4 -> 0
    assert m["per_threshold"]["per_class"]["a"] == pytest.approx([0.8, 1.0, 0.0])
    assert m["per_class"]["a"] == pytest.approx(1.0) and m["best_threshold"]["a"] == 0.5
    assert m["counts"]["tp"] == [[4], [4], [0]] and m["counts"]["fp"] == [[1], [0], [0]]
    # a per-sample mean would give (1.0 + 0.0) / 2 at t=0.4 for this split; the protocol does not
    assert m["summary"]["mIoU@0.50"] == pytest.approx(1.0)


def test_mean_of_per_class_max_vs_fixed_threshold():
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(3, 2, 16, 16, generator=g) > 0.6).float()
    probs = (gt * 0.3 + torch.rand(3, 2, 16, 16, generator=g) * 0.6).clamp(0, 1)
    ev = BEVIoUEvaluator(classes=["a", "b"], steps=[1, 3])
    ev.process({"gt_masks_bev": gt}, {1: Pred(probs), 3: Pred(probs.pow(2))})
    out = ev.evaluate()
    assert out["num_samples"] == 3 and list(out["steps"]) == ["1", "3"]
    for step, p in (("1", probs), ("3", probs.pow(2))):
        m = out["steps"][step]
        ious = []
        for k, name in enumerate(["a", "b"]):
            per_t = []
            for t in DEFAULT_THRESHOLDS:
                hard = p[:, k] >= t
                truth = gt[:, k] > 0.5
                tp = (hard & truth).sum().item()
                fp = (hard & ~truth).sum().item()
                fn = (~hard & truth).sum().item()
                per_t.append(tp / (tp + fp + fn + 1e-7))
            assert m["per_threshold"]["per_class"][name] == pytest.approx(per_t)
            ious.append(per_t)
        ious = np.array(ious)  # [K, T]
        assert m["summary"]["mIoU"] == pytest.approx(ious.max(axis=1).mean())
        assert m["summary"]["mIoU@0.50"] == pytest.approx(ious[:, 3].mean())
        assert m["summary"]["mIoU"] >= m["summary"]["mIoU@0.50"]
    assert out["steps"]["1"]["summary"]["mIoU"] != out["steps"]["3"]["summary"]["mIoU"]


def test_uncertainty_auroc_matches_sklearn_and_bins():
    g = torch.Generator().manual_seed(1)
    unc = torch.randint(0, 5, (4000,), generator=g).float() / 4  # discrete levels like step-change counts
    error = torch.rand(4000, generator=g) < 0.1 + 0.6 * unc
    hist = UncertaintyHistogram(num_bins=20)
    hist.update(unc[:2000], error[:2000])
    hist.update(unc[2000:], error[2000:])
    stats = hist.stats()
    assert stats.auroc == pytest.approx(roc_auc_score(error.numpy(), unc.numpy()), abs=1e-9)
    assert stats.auroc > 0.7
    assert sum(stats.pixels) == 4000 and sum(stats.errors) == int(error.sum())
    assert stats.pixels[19] == int((unc == 1.0).sum())  # 1.0 lands in the last bin
    assert stats.error_rate[0] == pytest.approx(float(error[unc == 0].float().mean()))
    assert stats.error_rate[1] is None  # empty bin


def test_uncertainty_of_evaluator_uses_any_class_error_at_half():
    gt = torch.zeros(1, 2, 1, 4)
    gt[0, 1, 0, 0] = 1
    probs = torch.zeros(1, 2, 1, 4)
    probs[0, 0, 0, 1] = 0.9  # wrong in class a at pixel 1; pixel 0 wrong in class b (missed)
    unc = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])  # uncertain exactly where wrong
    ev = BEVIoUEvaluator(classes=["a", "b"], steps=[2])
    ev.process({"gt_masks_bev": gt}, {2: Pred(probs, unc)})
    u = ev.evaluate()["steps"]["2"]["uncertainty"]
    assert u["auroc"] == pytest.approx(1.0) and u["overall_error_rate"] == pytest.approx(0.5)


def test_visuals_keep_the_first_samples():
    ev = BEVIoUEvaluator(classes=["a"], steps=[1, 3], num_vis=3)
    for i in range(2):
        gt = torch.zeros(2, 1, 4, 4)
        ev.process({"gt_masks_bev": gt, "meta": [{"token": f"t{2 * i}"}, {"token": f"t{2 * i + 1}"}]},
                   {s: Pred(torch.full((2, 1, 4, 4), 0.1 * s), torch.zeros(2, 4, 4)) for s in (1, 3)})
    vis = ev.visuals()
    assert list(vis["names"]) == ["t0", "t1", "t2"]
    assert vis["gt"].shape == (3, 1, 4, 4) and vis["probs_3"].shape == (3, 1, 4, 4)
    assert float(vis["probs_3"][0, 0, 0, 0]) == pytest.approx(0.3, abs=1e-3)
    assert vis["uncertainty_1"].shape == (3, 4, 4)


@pytest.mark.parametrize(
    "gt_shape, probs, message",
    [
        ((1, 2, 4, 4), torch.zeros(1, 2, 4, 5), "shape"),
        ((1, 2, 4, 4), torch.full((1, 2, 4, 4), float("nan")), "NaN"),
        ((1, 3, 4, 4), torch.zeros(1, 3, 4, 4), r"expected \[B, 2"),
    ],
)
def test_bad_predictions_are_rejected_with_a_clear_message(gt_shape, probs, message):
    ev = BEVIoUEvaluator(classes=["a", "b"], steps=[1])
    with pytest.raises(ValueError, match=message):
        ev.process({"gt_masks_bev": torch.zeros(gt_shape)}, {1: Pred(probs)})


def test_missing_step_count_and_bad_settings():
    ev = BEVIoUEvaluator(classes=["a"], steps=[1, 3])
    with pytest.raises(KeyError, match="step count 3"):
        ev.process({"gt_masks_bev": torch.zeros(1, 1, 2, 2)}, {1: Pred(torch.zeros(1, 1, 2, 2))})
    with pytest.raises(ValueError, match="0.5"):
        BEVIoUEvaluator(classes=["a"], steps=[1], thresholds=(0.4, 0.6))
    with pytest.raises(ValueError, match=">= 1"):
        BEVIoUEvaluator(classes=["a"], steps=[0])
