"""``bev-ddp bench frontier`` at a tiny scale: K draws as one batch, latency grid, quality points."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from bev_ddp.bench import frontier
from bev_ddp.bench.model import synthetic_batch
from bev_ddp.bev.build import build_bev_model
from bev_ddp.bev.schema import BEVConfig
from bev_ddp.config import load_config
from bev_ddp.errors import InputError

from bev_test_helpers import CONFIG_DIR  # noqa: I001

pytestmark = pytest.mark.filterwarnings("ignore::bev_ddp.ops.ExtensionFallbackWarning")
TINY = str(CONFIG_DIR / "synth_tiny_fusion_ddp.yaml")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = load_config(TINY, [], schema=BEVConfig)
    return cfg, build_bev_model(cfg).eval()


def _batch(cfg, seed: int) -> dict:
    batch = synthetic_batch(image_size=tuple(cfg.data.image_size), num_cams=6, num_points=3000, extent=32.0, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    batch["gt_masks_bev"] = (torch.rand(1, 6, 64, 64, generator=gen) < 0.3).float()
    return batch


def test_k_draws_in_one_batch_equal_separately_seeded_samples(tiny_model):
    cfg, model = tiny_model
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(2, model.head.ddp.decoder.cond_channels, 16, 16, generator=g)
    pred = frontier.sample_draws(model.head, cond, steps=2, draws=3, seed=5)  # the head's own K-draw sampling
    size = model.head.output_size or (16, 16)
    assert pred.probs.shape == (2, 6, *size) and len(pred.draw_step_probs) == 3 and len(pred.step_probs) == 2
    for d in range(3):
        alone = model.head.ddp.predict(cond, steps=2, seed=5 + d, output_size=model.head.output_size)
        for s in range(2):
            torch.testing.assert_close(pred.draw_step_probs[d][s], alone.step_logits[s].sigmoid(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pred.probs, torch.stack([p[-1] for p in pred.draw_step_probs]).mean(0))
    assert not torch.allclose(pred.draw_step_probs[0][-1], pred.draw_step_probs[1][-1])  # the draws differ
    one = frontier.sample_draws(model.head, cond, steps=2, draws=1, seed=5)  # K = 1: draw 0, the head's predict
    torch.testing.assert_close(one.probs, pred.draw_step_probs[0][-1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(one.probs, model.head.sample(cond, steps=[2], seed=5)[2].probs, rtol=0, atol=0)


def test_quality_points_score_every_estimator(tiny_model):
    cfg, model = tiny_model
    batches = [_batch(cfg, 0)]
    points = frontier.measure_quality(model, batches, classes=list(cfg.data.classes), steps=[1, 2], draws=[1, 2])
    assert [(p.steps, p.draws) for p in points] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for p in points:
        assert 0 <= p.miou50 <= p.miou <= 1 and 0 <= p.ece <= 1
        assert set(p.auroc) == {"change_count", "entropy", "error_probability", "mutual_information", "variance", "disagreement"}
        assert p.metrics["uncertainty_estimators"]["estimators"]["entropy"]["pixels"]["auroc"] == p.auroc["entropy"]
        per_class = p.metrics["uncertainty_estimators"]["estimators"]["entropy"]["class_cells"]["auroc"]
        assert p.auroc_per_class["entropy"] == per_class != p.auroc["entropy"]
    one = {(p.steps, p.draws): p for p in points}
    # one draw carries no spread across draws: MI / variance / disagreement are constant (AUROC 0.5)
    assert one[(1, 1)].auroc["mutual_information"] == pytest.approx(0.5)
    assert one[(1, 2)].auroc["mutual_information"] != pytest.approx(0.5)
    table = frontier.markdown_per_class(points, points[0])
    iou = points[3].metrics["per_class"]["divider"]
    assert "| S=2, K=2 |" in table and f"/ {100 * iou:.1f}" in table and table.count("\n") == 6


def test_latency_frontier_run_writes_json_and_plot(tmp_path):
    parser = argparse.ArgumentParser()
    frontier.add_arguments(parser)
    out, plot, md = tmp_path / "frontier.json", tmp_path / "frontier.png", tmp_path / "frontier.md"
    args = parser.parse_args(["--latency-config", TINY, "data.xbound=[-32.0,32.0,0.5]", "data.ybound=[-32.0,32.0,0.5]",
                              "--steps", "1,2", "--draws", "1,2", "--points", "2000", "--threads", "1",
                              "--out", str(out), "--plot", str(plot), "--markdown", str(md)])
    assert frontier.run(args) == 0
    result = json.loads(out.read_text())
    lat = result["latency"]
    sizes = {v["grid"]: v["grid_size"] for v in lat["variants"]}
    assert sizes == {"label": [128, 128], "encoder": [64, 64]}  # label grid 0.5 m, encoder grid 1 m
    assert len(lat["variants"]) == 2 * 2 * 2
    for v in lat["variants"]:
        assert v["total_s"] == pytest.approx(lat["encoder_s"] + v["head_s"])
        assert v["total_ratio"] == pytest.approx(v["total_s"] / lat["baseline_total_s"])
    rows = result["rows"]
    assert rows[0]["name"] == "baseline head" and rows[0]["total_ratio"] == 1.0
    assert all(r["miou"] is None for r in rows)  # no checkpoint: latency only
    assert plot.is_file() and plot.stat().st_size > 0
    text = md.read_text()
    assert "| baseline head | 1.00x |" in text and "torch thread(s)" in text and "Quality:" not in text
    assert not list(tmp_path.glob("*.tmp*"))  # written through temporary names
    with pytest.raises(InputError, match="--grids"):
        frontier.run(parser.parse_args(["--grids", "label,coarse"]))
    with pytest.raises(InputError, match="--draws"):
        frontier.run(parser.parse_args(["--draws", "0"]))


def test_without_steps_the_latency_points_use_the_model_default(tmp_path):
    parser = argparse.ArgumentParser()
    frontier.add_arguments(parser)
    out = tmp_path / "f.json"
    args = parser.parse_args(["--latency-config", TINY, "data.xbound=[-32.0,32.0,0.5]", "data.ybound=[-32.0,32.0,0.5]",
                              "model.head.ddp.steps=3", "--draws", "1", "--grids", "encoder", "--points", "2000",
                              "--threads", "1", "--out", str(out)])
    assert args.steps is None and frontier.run(args) == 0
    assert [(v["steps"], v["draws"]) for v in json.loads(out.read_text())["latency"]["variants"]] == [(3, 1)]


def test_rows_without_latency_list_every_quality_point():
    def point(s, k, m50):
        return frontier.QualityPoint(steps=s, draws=k, miou=m50 + 0.1, miou50=m50, auroc={"entropy": 0.8}, ece=0.1,
                                     metrics={}, auroc_per_class={"entropy": 0.86, "change_count": 0.9 if s > 1 else 0.5})
    rows = frontier.frontier_rows(None, [point(1, 1, 0.3), point(3, 2, 0.35)], point(1, 1, 0.33), "label", True)
    assert [r["name"] for r in rows] == ["baseline head", "DDP label grid, 1 step(s), 1 draw(s)",
                                         "DDP label grid, 3 step(s), 2 draw(s)"]
    assert all(r["total_ratio"] is None for r in rows) and rows[2]["miou50"] == 0.35
    table = frontier.markdown_table(rows)
    assert "| DDP label grid, 3 step(s), 2 draw(s) | n/a | 45.0 | 35.0 | 0.800 | 0.100 | 0.900 (change_count) |" in table
    assert "| DDP label grid, 1 step(s), 1 draw(s) | n/a | 40.0 | 30.0 | 0.800 | 0.100 | 0.860 (entropy) |" in table


def test_an_unusable_output_path_fails_before_any_measurement(tmp_path, monkeypatch):
    from bev_ddp.errors import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    parser = argparse.ArgumentParser()
    frontier.add_arguments(parser)
    monkeypatch.setattr(frontier, "run_frontier", lambda args: pytest.fail("measured before probing the outputs"))
    with pytest.raises(OutputError, match="--plot folder"):
        frontier.run(parser.parse_args(["--latency-config", TINY, "--plot", str(blocker / "sub" / "f.png")]))
