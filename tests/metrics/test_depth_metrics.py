"""Depth metrics against hand-computed values, invalid pixels and crops."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from bev_ddp.errors import InputError
from bev_ddp.metrics.depth import DepthEvaluator, crop_mask, depth_errors, eval_mask

# one image of 4 pixels; the last ground-truth pixel is invalid (0)
GT = torch.tensor([[1.0, 2.0], [4.0, 0.0]])
PRED = torch.tensor([[1.1, 1.0], [5.0, 3.0]])
# valid pairs (pred, gt): (1.1, 1) (1.0, 2) (5, 4); ratios max(d/g, g/d) = 1.1, 2.0, 1.25
HAND = {
    "d1": 1 / 3,            # only 1.1 < 1.25 (1.25 itself fails: strict)
    "d2": 2 / 3,            # 1.1, 1.25 < 1.5625
    "d3": 2 / 3,            # 2.0 >= 1.953125
    "abs_rel": (0.1 / 1 + 1.0 / 2 + 1.0 / 4) / 3,
    "sq_rel": (0.01 / 1 + 1.0 / 2 + 1.0 / 4) / 3,
    "rmse": math.sqrt((0.01 + 1.0 + 1.0) / 3),
    "rmse_log": math.sqrt((math.log(1.1) ** 2 + math.log(0.5) ** 2 + math.log(1.25) ** 2) / 3),
    "log10": (abs(math.log10(1.1)) + abs(math.log10(0.5)) + abs(math.log10(1.25))) / 3,
}


def test_depth_errors_hand_computed():
    mask = eval_mask(GT, min_depth=1e-3, max_depth=10.0)
    assert mask.tolist() == [[True, True], [True, False]]
    errors = depth_errors(PRED[mask], GT[mask])
    for name, value in HAND.items():
        assert errors[name] == pytest.approx(value, rel=1e-6), name
    logs = torch.tensor([math.log(1.1), math.log(0.5), math.log(1.25)], dtype=torch.float64)
    assert errors["silog"] == pytest.approx(100 * math.sqrt(float(logs.var(unbiased=False))), rel=1e-5)


def test_perfect_prediction():
    gt = torch.tensor([0.5, 3.0, 7.0])
    e = depth_errors(gt.clone(), gt)
    assert e["d1"] == 1.0 and e["abs_rel"] == 0.0 and e["rmse"] == 0.0 and e["log10"] == 0.0


def test_max_depth_excludes_far_pixels():
    gt = torch.tensor([[1.0, 90.0]])
    assert eval_mask(gt, min_depth=1e-3, max_depth=80.0).tolist() == [[True, False]]


def test_crops_hand_computed():
    nyu = crop_mask(480, 640, "nyu")
    assert int(nyu.sum()) == (471 - 45) * (601 - 41)
    assert nyu[45, 41] and not nyu[44, 41] and not nyu[45, 40] and nyu[470, 600] and not nyu[471, 600]
    garg = crop_mask(375, 1242, "garg")
    rows = garg.any(1).nonzero().flatten()
    cols = garg.any(0).nonzero().flatten()
    assert (int(rows[0]), int(rows[-1]) + 1) == (int(0.40810811 * 375), int(0.99189189 * 375)) == (153, 371)
    assert (int(cols[0]), int(cols[-1]) + 1) == (44, 1197)
    eigen = crop_mask(375, 1242, "eigen")
    assert int(eigen.any(1).nonzero()[0]) == int(0.3324324 * 375) == 124
    assert crop_mask(3, 4, None).all()
    with pytest.raises(InputError, match="crop"):
        crop_mask(3, 4, "kb")


def test_bad_predictions_raise():
    with pytest.raises(InputError, match="positive"):
        depth_errors(torch.tensor([0.0]), torch.tensor([1.0]))
    with pytest.raises(InputError, match="no valid"):
        depth_errors(torch.tensor([]), torch.tensor([]))


def _pred(depth):
    return SimpleNamespace(depth=depth, uncertainty=torch.zeros(depth.shape[0], *depth.shape[-2:]))


def test_evaluator_averages_per_image_and_skips_empty_images():
    ev = DepthEvaluator(steps=[1, 3], min_depth=1e-3, max_depth=10.0)
    gt = torch.stack([GT, GT, torch.zeros(2, 2)])[:, None]  # [3, 1, 2, 2]: image 3 has no valid pixel
    step1 = torch.stack([PRED, GT.clamp(min=0.5), PRED])[:, None]  # image 2 perfect on valid pixels
    # step 3: the out-of-range 20 m prediction is clamped to max_depth=10 (gt 4 -> rel. error 1.5)
    step3 = torch.stack([GT.clamp(min=0.5), torch.tensor([[1.0, 2.0], [20.0, 1.0]]), PRED])[:, None]
    ev.process({"gt_depth": gt}, {1: _pred(step1), 3: _pred(step3)})
    out = ev.evaluate()
    assert out["num_samples"] == 2 and out["skipped_images"] == 1
    assert out["steps"]["1"]["summary"]["abs_rel"] == pytest.approx(HAND["abs_rel"] / 2)
    assert out["steps"]["1"]["summary"]["d1"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["steps"]["3"]["summary"]["abs_rel"] == pytest.approx((0 + (6.0 / 4) / 3) / 2)


def test_evaluator_applies_crop():
    ev = DepthEvaluator(steps=[1], min_depth=1e-3, max_depth=80.0, crop="garg")
    gt = torch.full((1, 1, 375, 1242), 10.0)
    pred = gt.clone()
    pred[..., :100, :] = 20.0  # wrong only above the Garg crop: must not count
    ev.process({"gt_depth": gt}, {1: _pred(pred)})
    assert ev.evaluate()["steps"]["1"]["summary"]["abs_rel"] == pytest.approx(0.0)


def test_evaluator_shape_mismatch_raises():
    ev = DepthEvaluator(steps=[1], min_depth=1e-3, max_depth=10.0)
    with pytest.raises(InputError, match="gt_depth"):
        ev.process({"gt_depth": torch.ones(1, 1, 2, 2)}, {1: _pred(torch.ones(1, 1, 2, 3))})


def test_crop_of_a_window_is_placed_on_the_full_frame():
    """KITTI benchmark crop (352x1216 at the bottom centre of 375x1242): the Garg crop is a full-frame crop."""
    gt = torch.full((352, 1216), 10.0)
    top, left = 375 - 352, (1242 - 1216) // 2
    mask = eval_mask(gt, min_depth=1e-3, max_depth=80.0, crop="garg", full_size=(375, 1242), offset=(top, left))
    full = crop_mask(375, 1242, "garg")
    assert torch.equal(mask, full[top:top + 352, left:left + 1216])
    assert int(mask.any(1).nonzero()[0]) == 153 - top  # first scored row: full-frame row 153
    with pytest.raises(InputError, match="does not fit"):
        eval_mask(gt, min_depth=1e-3, max_depth=80.0, crop="garg", full_size=(300, 1242), offset=(top, left))
    ev = DepthEvaluator(steps=[1], min_depth=1e-3, max_depth=80.0, crop="garg")
    pred = gt.clone()
    pred[129, :] = 40.0  # full-frame row 152: just above the Garg crop, must not count
    ev.process({"gt_depth": gt[None, None], "meta": [{"full_size": (375, 1242), "crop_offset": (top, left)}]},
               {1: _pred(pred[None, None])})
    assert ev.evaluate()["steps"]["1"]["summary"]["abs_rel"] == pytest.approx(0.0)
