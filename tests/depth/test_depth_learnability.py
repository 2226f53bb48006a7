"""Learnability of monocular depth on the synthetic world's camera renders (engine training, held-out scene)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bev_ddp.depth.task import TASK
from bev_ddp.engine.trainer import train
from depth_helpers import depth_cfg

ITERS = 150
SELF_ALIGNED = 30


def _constant_scores(root) -> tuple[float, float]:
    """AbsRel and δ1 of predicting the training median depth everywhere (per-image means, as evaluated)."""
    def load(split):
        files = sorted((root / f"depth/{split}").glob("*.png"))
        return [np.asarray(Image.open(p)).astype(np.float64) / 1000 for p in files]

    median = np.median(np.concatenate([d[d > 0] for d in load("train")]))
    val = [d[d > 0] for d in load("val") if (d > 0).any()]
    abs_rel = np.mean([np.mean(np.abs(median - g) / g) for g in val])
    d1 = np.mean([np.mean(np.maximum(median / g, g / median) < 1.25) for g in val])
    return float(abs_rel), float(d1)


@pytest.mark.slow
def test_depth_learns_synthetic_renders(tmp_path_factory, image_task_export):
    root = image_task_export
    cfg = depth_cfg("synth_tiny.yaml", f"data.root={root}", f"train.iters={ITERS}",
                    f"train.self_aligned_iters={SELF_ALIGNED}", f"train.checkpoint_interval={ITERS}",
                    "train.log_interval=50", "eval.steps=[1,3]")
    torch.manual_seed(0)
    result = train(cfg, task=TASK, work_dir=tmp_path_factory.mktemp("depth_run"), progress=False)
    metrics = result.evals[ITERS].metrics["steps"]
    s1, s3 = metrics["1"]["summary"], metrics["3"]["summary"]
    abs_rel_const, d1_const = _constant_scores(root)
    print(f"\ndepth held-out: AbsRel step1 {s1['abs_rel']:.3f} step3 {s3['abs_rel']:.3f} "
          f"(training-median constant {abs_rel_const:.3f}); d1 step1 {s1['d1']:.3f} step3 {s3['d1']:.3f} "
          f"(constant {d1_const:.3f}); RMSE step1 {s1['rmse']:.2f} m step3 {s3['rmse']:.2f} m; "
          f"uncertainty AUROC step3 {metrics['3']['uncertainty']['auroc']:.3f}")
    for s in (s1, s3):
        assert s["abs_rel"] < 0.75 * abs_rel_const
        assert s["d1"] > 0.5 and s["d1"] > d1_const + 0.2
