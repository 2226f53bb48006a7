"""AUROC (fine bins), calibration (ECE, reliability) and the multi-estimator scores of BEV maps."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.metrics.bev_iou import BEVIoUEvaluator
from bev_ddp.metrics.uncertainty import CalibrationHistogram, MultiLabelUncertaintyScores, UncertaintyHistogram


def _rank_auroc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Mann-Whitney AUROC from average ranks (ties share their mean rank)."""
    s = score.double()
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    for v in torch.unique(s):  # average ranks within ties
        tie = s == v
        ranks[tie] = ranks[tie].mean()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_auroc_hand_cases():
    hist = UncertaintyHistogram(num_bins=4)
    hist.update(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([False, False, True, True]))
    assert hist.stats().auroc == pytest.approx(1.0)  # errors are exactly the most uncertain
    hist.reset()
    hist.update(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([True, True, False, False]))
    assert hist.stats().auroc == pytest.approx(0.0)
    hist.reset()
    hist.update(torch.tensor([0.3, 0.3]), torch.tensor([True, False]))
    assert hist.stats().auroc == pytest.approx(0.5)  # a tie counts half
    hist.reset()
    # wrong at 0.6 and 0.2; right at 0.4, 0.1, 0.7: pairs (w > r): 0.6>{0.4,0.1}, 0.2>{0.1} -> 3 of 6
    hist.update(torch.tensor([0.6, 0.2, 0.4, 0.1, 0.7]), torch.tensor([True, True, False, False, False]))
    assert hist.stats().auroc == pytest.approx(3 / 6)


def test_fine_resolution_separates_scores_crowded_in_one_reported_bin():
    g = torch.Generator().manual_seed(0)
    score = torch.rand(5000, generator=g) * 0.04  # all in the first of 20 reported bins
    wrong = torch.rand(5000, generator=g) < score * 20
    coarse = UncertaintyHistogram(num_bins=20)
    fine = UncertaintyHistogram(num_bins=20, resolution=20000)
    for h in (coarse, fine):
        h.update(score, wrong)
    assert coarse.stats().auroc == pytest.approx(0.5)  # one bin: every pair is a tie
    ref = _rank_auroc(score, wrong)
    assert ref > 0.7
    assert fine.stats().auroc == pytest.approx(ref, abs=2e-3)
    assert fine.stats().pixels == coarse.stats().pixels  # reported bins are the same
    with pytest.raises(ValueError):
        UncertaintyHistogram(num_bins=20, resolution=30)


def test_ece_of_calibrated_and_miscalibrated_inputs():
    g = torch.Generator().manual_seed(3)
    p = torch.rand(200_000, generator=g)
    calibrated = torch.rand(200_000, generator=g) < p  # P(y = 1 | p) = p
    cal = CalibrationHistogram(num_bins=10)
    cal.update(p, calibrated)
    stats = cal.stats()
    assert stats.ece < 0.01
    assert sum(stats.count) == 200_000
    over = CalibrationHistogram(num_bins=10)
    over.update(p, torch.rand(200_000, generator=g) < 0.5)  # labels ignore p: ECE = E|p - 0.5| = 0.25
    assert over.stats().ece == pytest.approx(0.25, abs=0.01)
    exact = CalibrationHistogram(num_bins=2)  # hand case: bin 0 mean p 0.2, rate 0.5; bin 1 mean 0.9, rate 1
    exact.update(torch.tensor([0.1, 0.3, 0.9, 0.9]), torch.tensor([True, False, True, True]))
    s = exact.stats()
    assert s.mean_probability == pytest.approx([0.2, 0.9]) and s.positive_rate == pytest.approx([0.5, 1.0])
    assert s.ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.1)


def test_scores_use_both_error_definitions():
    gt = torch.zeros(1, 2, 1, 3, dtype=torch.bool)
    gt[0, 0, 0, 0] = True
    probs = torch.tensor([[[[0.2, 0.1, 0.1]], [[0.1, 0.1, 0.9]]]])  # class 0 misses cell 0; class 1 false at cell 2
    unc = torch.tensor([[[[0.9, 0.0, 0.1]], [[0.0, 0.0, 0.8]]]])  # high exactly on the two wrong (class, cell)
    scores = MultiLabelUncertaintyScores(num_bins=10, resolution=100)
    scores.update(probs, gt, {"u": unc})
    out = scores.to_dict()
    u = out["estimators"]["u"]
    assert u["class_cells"]["auroc"] == pytest.approx(1.0) and u["class_cells"]["overall_error_rate"] == pytest.approx(2 / 6)
    assert u["pixels"]["auroc"] == pytest.approx(1.0) and sum(u["pixels"]["pixels"]) == 3
    assert u["pixels"]["overall_error_rate"] == pytest.approx(2 / 3)
    assert out["calibration"]["ece"] is not None and set(out["definitions"]) == {"class_cells", "pixels"}


class _Pred:
    def __init__(self, probs, steps):
        self.probs, self.step_probs, self.uncertainty = probs, steps, None


def test_bev_evaluator_reports_estimators_and_calibration():
    g = torch.Generator().manual_seed(4)
    gt = torch.rand(2, 3, 8, 8, generator=g) < 0.3
    steps = [torch.rand(2, 3, 8, 8, generator=g) for _ in range(3)]
    ev = BEVIoUEvaluator(classes=["a", "b", "c"], steps=[3])
    ev.process({"gt_masks_bev": gt.float()}, {3: _Pred(steps[-1], steps)})
    m = ev.evaluate()["steps"]["3"]["uncertainty_estimators"]
    assert set(m["estimators"]) == {"change_count", "entropy", "error_probability", "mutual_information", "variance", "disagreement"}
    ref = _rank_auroc((0.5 - (steps[-1] - 0.5).abs()).flatten(), ((steps[-1] >= 0.5) != gt).flatten())
    # entropy is a monotone function of |p - 0.5|: same ranking as the reference score
    assert m["estimators"]["entropy"]["class_cells"]["auroc"] == pytest.approx(ref, abs=5e-3)
    assert 0 <= m["calibration"]["ece"] <= 1
