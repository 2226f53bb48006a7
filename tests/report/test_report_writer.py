"""Report files from an evaluator's metrics: JSON, CSV, markdown, plots, and re-rendering."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import pytest
import torch

from bev_ddp.cli import main
from bev_ddp.errors import InputError
from bev_ddp.metrics.bev_iou import BEVIoUEvaluator
from bev_ddp.report import report_from_json, write_report


@dataclass
class Pred:
    probs: torch.Tensor
    uncertainty: torch.Tensor


@pytest.fixture()
def evaluated():
    g = torch.Generator().manual_seed(0)
    classes = ["drivable_area", "divider"]
    ev = BEVIoUEvaluator(classes=classes, steps=[1, 3], num_vis=2)
    for _ in range(2):
        gt = (torch.rand(2, 2, 20, 20, generator=g) > 0.5).float()
        noise = torch.rand(2, 2, 20, 20, generator=g)
        preds = {s: Pred((0.6 * gt + 0.5 * noise / s).clamp(0, 1), noise.mean(1)) for s in (1, 3)}
        ev.process({"gt_masks_bev": gt}, preds)
    return ev.evaluate(), ev.visuals()


def test_write_report_files_and_values(tmp_path, evaluated):
    metrics, visuals = evaluated
    files = write_report(metrics, tmp_path, visuals=visuals, console=False)
    names = {p.name for p in files}
    assert {"metrics.json", "per_class_iou.csv", "report.md", "iou_vs_threshold.png", "metrics_vs_steps.png",
            "uncertainty_vs_error.png", "maps.png"} <= names
    for p in files:
        assert p.stat().st_size > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    rows = list(csv.reader((tmp_path / "per_class_iou.csv").open()))
    assert rows[0] == ["class", "steps_1", "steps_3", "steps_1@0.50", "steps_3@0.50"]
    by_name = {r[0]: r[1:] for r in rows[1:]}
    assert float(by_name["divider"][1]) == pytest.approx(metrics["steps"]["3"]["per_class"]["divider"], abs=1e-6)
    table = metrics["steps"]["3"]["per_threshold"]  # the fixed-threshold figure is the 0.50 row of the sweep
    at50 = table["per_class"]["divider"][table["thresholds"].index(0.5)]
    assert metrics["steps"]["3"]["per_class@0.50"]["divider"] == pytest.approx(at50)
    assert float(by_name["divider"][3]) == pytest.approx(at50, abs=1e-6)
    assert float(by_name["mIoU@0.50"][0]) == pytest.approx(metrics["steps"]["1"]["summary"]["mIoU@0.50"], abs=1e-6)
    assert by_name["mIoU@0.50"][2:] == ["", ""]
    md = (tmp_path / "report.md").read_text()
    step1 = metrics["steps"]["1"]
    expected = f"{step1['per_class@0.50']['drivable_area'] * 100:.1f} / {step1['per_class']['drivable_area'] * 100:.1f}"
    assert f"| drivable_area | {expected} |" in md
    assert "IoU at 0.50 / at the best threshold (%)" in md
    assert "![Predictions next to ground truth](maps.png)" in md


def test_report_without_optional_parts(tmp_path):
    metrics = {"task": "depth", "metric": "AbsRel", "display_scale": {"AbsRel": 1.0},
               "steps": {"1": {"summary": {"AbsRel": 0.123}}, "3": {"summary": {"AbsRel": 0.1}}}}
    files = write_report(metrics, tmp_path, console=False)
    names = {p.name for p in files}
    assert names == {"metrics.json", "report.md", "metrics_vs_steps.png"}
    assert "| AbsRel | 0.123 | 0.1 |" in (tmp_path / "report.md").read_text()


def test_report_command_rerenders_from_json(tmp_path, evaluated, capsys):
    metrics, visuals = evaluated
    src = tmp_path / "eval"
    write_report(metrics, src, visuals=visuals, console=False)
    import numpy as np

    np.savez_compressed(src / "visuals.npz", **visuals)
    out = tmp_path / "again"
    assert main(["report", str(src / "metrics.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "drivable_area" in printed and "mIoU" in printed
    assert (out / "maps.png").is_file() and (out / "report.md").read_text() == (src / "report.md").read_text()


def test_bad_metrics_inputs(tmp_path, capsys):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        report_from_json(bad, tmp_path / "out")
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "metrics file not found" in capsys.readouterr().err
    with pytest.raises(InputError, match="steps"):
        write_report({"metric": "IoU"}, tmp_path / "out", console=False)
