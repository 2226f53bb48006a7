"""Learnability of monocular depth on the synthetic world's camera renders (engine training, held-out scene)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bev_ddp.depth.task import TASK
from bev_ddp.engine.trainer import train
from depth_helpers import depth_cfg, image_task_export

ITERS = 150
SELF_ALIGNED = 30


def _constant_abs_rel(root) -> float:
    """AbsRel of predicting the training median depth everywhere (per-image mean, as evaluated)."""
    def load(split):
        return [np.asarray(Image.open(p)).astype(np.float64) / 1000 for p in sorted((root / f"depth/{split}").glob("*.png"))]

    median = np.median(np.concatenate([d[d > 0] for d in load("train")]))
    return float(np.mean([np.mean(np.abs(median - d[d > 0]) / d[d > 0]) for d in load("val") if (d > 0).any()]))


@pytest.mark.slow
def test_depth_learns_synthetic_renders(tmp_path_factory):
    root = image_task_export(tmp_path_factory.getbasetemp())
    cfg = depth_cfg("synth_tiny.yaml", f"data.root={root}", f"train.iters={ITERS}",
                    f"train.self_aligned_iters={SELF_ALIGNED}", f"train.checkpoint_interval={ITERS}",
                    "train.log_interval=50", "eval.steps=[1,3]")
    torch.manual_seed(0)
    result = train(cfg, task=TASK, work_dir=tmp_path_factory.mktemp("depth_run"), progress=False)
    metrics = result.evals[ITERS].metrics["steps"]
    s1, s3 = metrics["1"]["summary"], metrics["3"]["summary"]
    constant = _constant_abs_rel(root)
    print(f"\ndepth held-out: AbsRel step1 {s1['abs_rel']:.3f} step3 {s3['abs_rel']:.3f} (median constant {constant:.3f}); "
          f"d1 step1 {s1['d1']:.3f} step3 {s3['d1']:.3f}; RMSE step3 {s3['rmse']:.2f} m")
    assert s3["abs_rel"] < 0.6 * constant
    assert s3["d1"] > 0.5
    assert s3["abs_rel"] <= s1["abs_rel"] + 0.01
