"""Learnability on the synthetic world's camera renders: short CPU training through the engine.

Train on three scenes' 72 camera images, evaluate on a fourth scene's 24 (held out), with the
tiny config; the last iterations use self-aligned denoising (Alg. 4).  Prints the figures.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bev_ddp.engine.trainer import train
from bev_ddp.seg.task import TASK
from seg_helpers import tiny_cfg

ITERS = 150
SELF_ALIGNED = 30


def _majority_miou(root) -> float:
    """mIoU of predicting the most frequent training class everywhere (the 'chance' reference)."""
    train = np.concatenate([np.asarray(Image.open(p)).ravel() for p in sorted((root / "labels/train").glob("*.png"))])
    val = np.concatenate([np.asarray(Image.open(p)).ravel() for p in sorted((root / "labels/val").glob("*.png"))])
    majority = np.bincount(train).argmax()
    present = np.unique(val)
    iou = [(val == majority).mean() if c == majority else 0.0 for c in present]
    return float(np.mean(iou))


@pytest.mark.slow
def test_seg_learns_synthetic_renders(tmp_path_factory, image_task_export):
    root = image_task_export
    cfg = tiny_cfg(TASK, "synth_tiny.yaml", f"data.root={root}", f"train.iters={ITERS}",
                   f"train.self_aligned_iters={SELF_ALIGNED}", f"train.checkpoint_interval={ITERS}",
                   "train.log_interval=50", "eval.steps=[1,3]")
    torch.manual_seed(0)
    result = train(cfg, task=TASK, work_dir=tmp_path_factory.mktemp("seg_run"), progress=False)
    metrics = result.evals[ITERS].metrics["steps"]
    s1, s3 = metrics["1"]["summary"], metrics["3"]["summary"]
    chance = _majority_miou(root)
    print(f"\nseg held-out: mIoU step1 {s1['mIoU']:.3f} step3 {s3['mIoU']:.3f} (majority class {chance:.3f}); "
          f"aAcc step1 {s1['aAcc']:.3f} step3 {s3['aAcc']:.3f}; "
          f"uncertainty AUROC step3 {metrics['3']['uncertainty']['auroc']:.3f}")
    assert s3["mIoU"] > 0.35 and s3["mIoU"] > 5 * chance
    assert s3["aAcc"] > 0.8
    assert s3["mIoU"] >= s1["mIoU"] - 0.01  # more sampling steps do not hurt after self-aligned fine-tuning
    assert metrics["3"]["uncertainty"]["auroc"] > 0.55  # changing pixels are more often wrong
