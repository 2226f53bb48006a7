"""Report figures: metre ticks, ego marker and colour bars on the BEV maps; the IoU-vs-threshold
legend outside the panels.  The figures are captured as matplotlib objects when saved."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib.figure
import pytest
import torch

from bev_ddp.metrics.bev_iou import BEVIoUEvaluator
from bev_ddp.report import plots


@pytest.fixture()
def saved(monkeypatch):
    """Figures passed to ``savefig``, in order."""
    figures = []
    original = matplotlib.figure.Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures


def _evaluation(grid):
    gen = torch.Generator().manual_seed(0)
    gt = (torch.rand(1, 2, 16, 12, generator=gen) > 0.5).float()  # X = 16, Y = 12
    noise = torch.rand(1, 2, 16, 12, generator=gen)
    preds = {s: SimpleNamespace(probs=(0.6 * gt + 0.5 * noise).clamp(0, 1), uncertainty=noise[:, 0]) for s in (1, 3)}
    ev = BEVIoUEvaluator(classes=["drivable_area", "divider"], steps=[1, 3], num_vis=1, grid=grid)
    ev.process({"gt_masks_bev": gt}, preds)
    return ev.evaluate(), ev.visuals()


def test_bev_maps_have_metre_ticks_an_ego_marker_and_uncertainty_colour_bars(tmp_path, saved):
    _, visuals = _evaluation(grid=((-8.0, 8.0, 1.0), (-3.0, 9.0, 1.0)))
    assert plots.plot_maps(visuals, tmp_path / "maps.png").stat().st_size > 0
    fig = saved[-1]
    panels = [ax for ax in fig.axes if ax.get_title()]
    colour_bars = [ax for ax in fig.axes if not ax.get_title() and ax.get_label() == "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["ground truth", "prediction, 1 step", "uncertainty, 1 step",
                                                "prediction, 3 steps", "uncertainty, 3 steps"]
    assert len(colour_bars) == 2 and all(cb.get_ylim() == (0.0, 1.0) for cb in colour_bars)
    for ax in panels:
        assert ax.get_xlim() == (-8.0, 8.0) and ax.get_ylim() == (-3.0, 9.0)  # metres, y up
        assert len(ax.get_xticks()) > 2
        markers = [p for p in ax.patches if isinstance(p, matplotlib.patches.Polygon)]
        assert len(markers) == 1
        tip = markers[0].get_xy()[:, 1].argmax()
        assert markers[0].get_xy()[tip, 0] == 0.0  # pointing forward (+y) from the origin
    assert "(m)" in panels[0].get_xlabel()


def test_maps_without_a_grid_fall_back_to_cells_and_no_marker(tmp_path, saved):
    _, visuals = _evaluation(grid=None)
    plots.plot_maps(visuals, tmp_path / "maps.png")
    ground_truth = next(ax for ax in saved[-1].axes if ax.get_title() == "ground truth")
    assert ground_truth.get_xlim() == (0.0, 16.0) and ground_truth.get_ylim() == (0.0, 12.0)
    assert not ground_truth.patches and "cells" in ground_truth.get_xlabel()


def test_iou_vs_threshold_legend_is_outside_the_panels(tmp_path, saved):
    metrics, _ = _evaluation(grid=None)
    plots.plot_metric_vs_threshold(metrics, tmp_path / "iou.png")
    fig = saved[-1]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    fig.canvas.draw()
    legend_box = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        assert legend_box.x0 >= ax.get_window_extent().x1  # right of every panel: no curve behind it
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["drivable_area", "divider", "mean"]
