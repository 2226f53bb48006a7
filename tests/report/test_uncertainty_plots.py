"""Estimator table, per-estimator error-rate and reliability figures in the report; the frontier plot."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bev_ddp.metrics.bev_iou import BEVIoUEvaluator
from bev_ddp.report import write_report
from bev_ddp.report.uncertainty_plots import markdown_estimators, plot_frontier


@dataclass
class Pred:
    probs: torch.Tensor
    uncertainty: torch.Tensor
    step_probs: list
    draw_step_probs: list


def _metrics() -> dict:
    g = torch.Generator().manual_seed(0)
    ev = BEVIoUEvaluator(classes=["a", "b"], steps=[2])
    gt = (torch.rand(2, 2, 12, 12, generator=g) > 0.5).float()
    draws = [[(0.4 * gt + 0.6 * torch.rand(2, 2, 12, 12, generator=g)).clamp(0, 1) for _ in range(2)] for _ in range(3)]
    probs = torch.stack([d[-1] for d in draws]).mean(0)
    ev.process({"gt_masks_bev": gt}, {2: Pred(probs, torch.zeros(2, 12, 12), draws[0], draws)})
    return ev.evaluate()


def test_report_has_estimator_table_and_figures(tmp_path):
    metrics = _metrics()
    est = metrics["steps"]["2"]["uncertainty_estimators"]["estimators"]
    assert est["mutual_information"]["pixels"]["auroc"] != 0.5  # three draws: the spread is measured
    files = {p.name for p in write_report(metrics, tmp_path, console=False)}
    assert {"uncertainty_estimators.png", "reliability.png"} <= files
    md = (tmp_path / "report.md").read_text()
    auroc = est["entropy"]["pixels"]["auroc"]
    assert f"| entropy | pixels | {auroc:.3f} |" in md
    assert "![Reliability of the probabilities](reliability.png)" in md
    assert "ECE" in markdown_estimators(metrics)
    assert markdown_estimators({"steps": {"1": {"summary": {}}}}) == ""


def test_frontier_plot(tmp_path):
    rows = [{"name": "baseline head", "grid": None, "steps": None, "draws": None, "total_ratio": 1.0, "miou": 0.4,
             "miou50": 0.3, "auroc": {"entropy": 0.8}, "ece": 0.01},
            {"name": "p", "grid": "encoder", "steps": 3, "draws": 2, "total_ratio": 1.2, "miou": 0.45, "miou50": 0.35,
             "auroc": {"entropy": 0.82, "mutual_information": 0.7}, "ece": 0.02},
            {"name": "q", "grid": "label", "steps": 5, "draws": 4, "total_ratio": 3.0, "miou": None, "miou50": None,
             "auroc": {}, "ece": None}]
    path = plot_frontier(rows, tmp_path / "sub" / "frontier.png")
    assert path is not None and path.stat().st_size > 0
    assert plot_frontier([], tmp_path / "none.png") is None
