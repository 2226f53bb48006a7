"""KITTI Garg/Eigen crops on the 352x1216 KB-cropped ground truth, against hand-computed index ranges.

Hand computation (int() truncation of fraction x size, as the KITTI/DepthFormer evaluation code;
end exclusive): Garg rows int(0.40810811*352)=143 .. int(0.99189189*352)=349, cols
int(0.03594771*1216)=43 .. int(0.96405229*1216)=1172; Eigen rows int(0.3324324*352)=117 ..
int(0.91351351*352)=321, same cols.  On the full 375x1242 frame (KB crop offset top 23, left 13)
Garg is rows 153..371, cols 44..1197, i.e. rows 130..348 and cols 31..1184 of the window.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bev_ddp.depth.task import TASK as DEPTH
from bev_ddp.errors import InputError
from bev_ddp.metrics.depth import DepthEvaluator, crop_mask
from depth_helpers import depth_cfg

FULL, TOP, LEFT = (375, 1242), 375 - 352, (1242 - 1216) // 2
HAND = {"garg": ((143, 349), (43, 1172)), "eigen": ((117, 321), (43, 1172))}


def ranges(mask: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    return (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)


@pytest.mark.parametrize("crop", sorted(HAND))
def test_crop_of_the_kb_cropped_ground_truth_matches_hand_ranges(crop):
    mask = crop_mask(352, 1216, crop)
    assert ranges(mask) == HAND[crop]
    (r0, r1), (c0, c1) = HAND[crop]
    assert int(mask.sum()) == (r1 - r0) * (c1 - c0)  # a solid rectangle


def evaluate(crop_frame: str, pred: torch.Tensor, gt: torch.Tensor) -> float:
    ev = DepthEvaluator(steps=[1], min_depth=1e-3, max_depth=80.0, crop="garg", crop_frame=crop_frame)
    meta = [{"full_size": FULL, "crop_offset": (TOP, LEFT), "name": "x"}]
    ev.process({"gt_depth": gt[None, None], "meta": meta},
               {1: SimpleNamespace(depth=pred[None, None], uncertainty=torch.zeros(1, 352, 1216))})
    return ev.evaluate()["steps"]["1"]["summary"]["abs_rel"]


def test_evaluator_scores_exactly_the_cropped_frame_garg_window():
    gt = torch.full((352, 1216), 10.0)
    # wrong pixels just outside the published window on every side, and inside the full-frame one
    pred = gt.clone()
    for row, col in ((142, 600), (349, 600), (200, 42), (200, 1172), (135, 600), (200, 35)):
        pred[row, col] = 20.0
    assert evaluate("cropped", pred, gt) == 0
    assert evaluate("full", pred, gt) > 0  # the full-frame placement scores rows 130..142 and cols 31..42
    pred = gt.clone()
    pred[143, 43] = pred[348, 1171] = 20.0  # the window's corners count: AbsRel 1.0 each
    assert evaluate("cropped", pred, gt) == pytest.approx(2 / (206 * 1129))


def test_configs_use_the_published_crop_frame():
    cfg = depth_cfg("kitti_swin_t.yaml")
    assert cfg.data.eval_crop_frame == "cropped"
    assert DEPTH.build_evaluator(cfg, [1]).crop_frame == "cropped"
    with pytest.raises(InputError, match="crop_frame"):
        DepthEvaluator(steps=[1], min_depth=1e-3, max_depth=80.0, crop="garg", crop_frame="frame")
