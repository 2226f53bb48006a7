"""mmengine's Runner trains and validates the tiny fusion DDP model on mmdet3d info files, and its map
IoU equals ``bev-ddp eval``'s on the same weights and samples."""
from __future__ import annotations

import json

import pytest
import torch

from mmdet3d_helpers import BEV_CONFIG, runner_config

pytest.importorskip("mmdet3d", reason="the mmdet3d extra is not installed (make mmdet3d)")


@pytest.mark.slow
def test_runner_trains_validates_and_matches_bev_ddp_eval(registered, mmdet3d_world, tmp_path):
    from mmengine.runner import Runner

    from bev_ddp.cli import main

    cfg = runner_config(mmdet3d_world, tmp_path / "work", **{"train_cfg.max_iters": 2, "train_cfg.val_interval": 2,
                                                            "default_hooks.checkpoint.interval": 2})
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()  # 2 iterations, then the validation pass
    assert (tmp_path / "work" / "iter_2.pth").is_file()
    after = runner.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed no weight"
    metrics = runner.val()

    weights = tmp_path / "weights.pth"
    torch.save(runner.model.model.state_dict(), weights)
    out = tmp_path / "eval"
    assert main(["eval", str(BEV_CONFIG), str(weights), "--steps", "1,3", "--out", str(out), "--no-progress",
                 f"data.dataroot={mmdet3d_world}"]) == 0
    expected = json.loads((out / "metrics.json").read_text())
    assert expected["num_samples"] == 3
    compared = 0
    for step in ("1", "3"):
        ours = expected["steps"][step]
        assert metrics[f"bev_map/{step}steps/mIoU"] == pytest.approx(ours["summary"]["mIoU"], abs=1e-6)
        assert metrics[f"bev_map/{step}steps/mIoU@0.50"] == pytest.approx(ours["summary"]["mIoU@0.50"], abs=1e-6)
        table = ours["per_threshold"]
        for name, values in table["per_class"].items():
            assert metrics[f"bev_map/{step}steps/IoU/{name}"] == pytest.approx(ours["per_class"][name], abs=1e-6)
            for t, value in zip(table["thresholds"], values):
                assert metrics[f"bev_map/{step}steps/IoU/{name}@{t:.2f}"] == pytest.approx(value, abs=1e-6)
                compared += 1
    assert compared == 2 * 6 * 7
    assert max(v for k, v in metrics.items() if k.endswith("mIoU")) > 0  # not a comparison of zeros
