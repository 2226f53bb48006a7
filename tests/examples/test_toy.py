"""Learnability of the DDP core on the toy 2-D map task (bev_ddp.examples.toy)."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.examples.toy import ToyConfig, format_toy_result, make_toy_batch, train_toy


def test_toy_batch_is_seeded_and_labelled():
    a = make_toy_batch(4, generator=torch.Generator().manual_seed(0))
    b = make_toy_batch(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    image, labels = a
    assert image.shape == (4, 3, 32, 32) and labels.shape == (4, 32, 32)
    assert set(labels.unique().tolist()) <= {0, 1, 2} and (labels > 0).any()
    # the foreground channel carries the shapes
    assert image[:, 0][labels > 0].mean() > image[:, 0][labels == 0].mean() + 0.5


def test_toy_run_is_bit_reproducible_and_reports_progress(capsys):
    cfg = ToyConfig(train_iters=4, self_aligned_iters=2, val_samples=8, eval_steps=(1, 2))
    lines: list[str] = []
    first, second = train_toy(cfg), train_toy(cfg, progress=True, log=lines.append)
    assert first.losses == second.losses  # progress output does not touch the result
    assert first.after_self_aligned == second.after_self_aligned
    assert lines[0].startswith("training 4 iterations, then 2 self-aligned") and len(lines) == 3
    assert "6/6" in capsys.readouterr().err  # the tqdm bar ran over every iteration


@pytest.mark.slow
def test_ddp_learns_toy_map_task():
    result = train_toy(ToyConfig())
    print("\n" + format_toy_result(result))
    one, three = result.by_steps(1), result.by_steps(3)
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert one.miou > 80.0  # far above the ~33 % of a constant guess
    assert three.miou >= one.miou  # dynamic inference: more steps do not hurt after self-aligned training
    assert three.uncertainty_auroc is not None and three.uncertainty_auroc > 0.55  # wrong pixels more uncertain
    assert one.uncertainty_auroc == pytest.approx(0.5)  # one step has no changes to count
