"""Monocular depth metrics (Eigen et al. protocol) with the standard evaluation crops.

Per image, over the evaluated pixels (ground truth in ``(min_depth, max_depth)`` and inside the
crop), with the prediction clamped to ``[min_depth, max_depth]``; ``d`` = prediction, ``g`` =
ground truth, both in metres:

=============  =================================================
name           formula
=============  =================================================
``d1/d2/d3``   fraction with ``max(d/g, g/d) < 1.25**i``
``abs_rel``    ``mean(|d - g| / g)``
``sq_rel``     ``mean((d - g)**2 / g)``
``rmse``       ``sqrt(mean((d - g)**2))``
``rmse_log``   ``sqrt(mean((ln d - ln g)**2))``
``log10``      ``mean(|log10 d - log10 g|)``
``silog``      ``100 * sqrt(var(ln d - ln g))`` (population variance)
=============  =================================================

Scores are averaged over images (each image counts once), as in the KITTI / NYU literature.
:meth:`DepthEvaluator.evaluate` reports them under ``steps[s]["summary"]`` (fractions, not %).

Crops (fractions of the ground-truth height H and width W, rows then columns):

* ``garg``  (KITTI, Garg et al.): rows ``[0.40810811 H, 0.99189189 H)``, cols ``[0.03594771 W, 0.96405229 W)``
* ``eigen`` (KITTI, Eigen et al.): rows ``[0.3324324 H, 0.91351351 H)``, cols ``[0.0359477 W, 0.96405229 W)``
* ``nyu``   (NYU-Depth v2, Eigen et al.): rows ``[45, 471)``, cols ``[41, 601)`` of a 480×640 image,
  scaled proportionally for other sizes.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch

from bev_ddp.comm import all_reduce_sum
from bev_ddp.errors import InputError
from bev_ddp.metrics.seg import _finite_or_none, _reduced_stats, stack_visuals
from bev_ddp.metrics.uncertainty import UncertaintyHistogram

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")  # headline first
LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"}

# (row_start, row_end, col_start, col_end) as fractions of H and W
CROPS: dict[str, tuple[float, float, float, float]] = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
    "nyu": (45 / 480, 471 / 480, 41 / 640, 601 / 640),
}


def crop_mask(height: int, width: int, crop: Optional[str]) -> torch.Tensor:
    """bool [H, W]: True inside the named evaluation crop (everywhere when ``crop`` is None)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    if crop is None or crop == "none":
        mask[:] = True
        return mask
    if crop not in CROPS:
        raise InputError(f"unknown depth evaluation crop {crop!r}; choose from {', '.join(CROPS)} or none")
    r0, r1, c0, c1 = CROPS[crop]
    mask[int(r0 * height):int(r1 * height), int(c0 * width):int(c1 * width)] = True
    return mask


def eval_mask(gt: torch.Tensor, *, min_depth: float, max_depth: float, crop: Optional[str] = None,
              full_size: Optional[Sequence[int]] = None, offset: Sequence[int] = (0, 0)) -> torch.Tensor:
    """bool [..., H, W]: pixels that are scored (valid ground truth inside the crop).

    ``full_size`` / ``offset``: when ``gt`` is a window of a larger frame (the KITTI benchmark
    crop), the evaluation crop is placed on the full frame of that size and ``gt`` sits at
    ``offset`` = (top, left) in it.
    """
    valid = (gt > min_depth) & (gt < max_depth)
    h, w = gt.shape[-2:]
    if full_size is None:
        mask = crop_mask(h, w, crop)
    else:
        top, left = int(offset[0]), int(offset[1])
        mask = crop_mask(int(full_size[0]), int(full_size[1]), crop)[top:top + h, left:left + w]
        if tuple(mask.shape) != (h, w):
            raise InputError(f"ground truth {(h, w)} at offset {(top, left)} does not fit the frame {tuple(full_size)}")
    return valid & mask.to(gt.device)


def depth_errors(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """All :data:`DEPTH_METRICS` of one image from 1-D tensors of valid pixels (metres, > 0)."""
    if pred.shape != gt.shape:
        raise InputError(f"depth prediction shape {tuple(pred.shape)} != ground truth shape {tuple(gt.shape)}")
    if gt.numel() == 0:
        raise InputError("depth_errors got no valid ground-truth pixel")
    pred, gt = pred.double(), gt.double()
    if not torch.isfinite(pred).all() or (pred <= 0).any():
        raise InputError("depth prediction must be finite and positive (clamp it to min_depth first)")
    ratio = torch.maximum(pred / gt, gt / pred)
    diff = pred - gt
    log_diff = torch.log(pred) - torch.log(gt)
    return {
        "d1": float((ratio < 1.25).double().mean()),
        "d2": float((ratio < 1.25 ** 2).double().mean()),
        "d3": float((ratio < 1.25 ** 3).double().mean()),
        "abs_rel": float((diff.abs() / gt).mean()),
        "sq_rel": float((diff ** 2 / gt).mean()),
        "rmse": float(torch.sqrt((diff ** 2).mean())),
        "rmse_log": float(torch.sqrt((log_diff ** 2).mean())),
        "log10": float((torch.log10(pred) - torch.log10(gt)).abs().mean()),
        "silog": float(100 * torch.sqrt(torch.clamp((log_diff ** 2).mean() - log_diff.mean() ** 2, min=0))),
    }


class DepthEvaluator:
    """Per-image depth metrics averaged over a split, per sampling step count.

    ``process(batch, preds)`` takes ``batch["gt_depth"]`` float [B, 1, H, W] (metres, 0 = invalid)
    and ``preds = {steps: DepthPrediction}`` with ``depth`` float [B, 1, H, W] (metres) and
    ``uncertainty`` float [B, H, W].  Images without any valid pixel are skipped and counted.
    A sample whose ``meta`` holds ``full_size`` and ``crop_offset`` (KITTI benchmark crop) gets the
    evaluation crop of the full frame.
    The uncertainty is scored against "pixel fails δ1" (``max(d/g, g/d) >= 1.25``).
    """

    def __init__(self, *, steps: Sequence[int], min_depth: float, max_depth: float, crop: Optional[str] = None,
                 num_vis: int = 0, uncertainty_bins: int = 10) -> None:
        if not 0 <= min_depth < max_depth:
            raise InputError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        crop_mask(1, 1, crop)  # validates the name
        self.steps = [int(s) for s in steps]
        self.min_depth, self.max_depth, self.crop = min_depth, max_depth, crop
        self.num_vis = num_vis
        self.uncertainty_bins = uncertainty_bins
        self.reset()

    def reset(self) -> None:
        self.sums = {s: torch.zeros(len(DEPTH_METRICS), dtype=torch.float64) for s in self.steps}
        self.count = torch.zeros((), dtype=torch.float64)
        self.skipped = 0
        self.uncertainty = {s: UncertaintyHistogram(self.uncertainty_bins) for s in self.steps}
        self.vis: list[dict[str, Any]] = []

    def process(self, batch: dict[str, Any], preds: dict[int, Any]) -> None:
        gt = batch["gt_depth"]
        if gt.dim() != 4 or gt.shape[1] != 1:
            raise InputError(f"gt_depth must be [B, 1, H, W], got {tuple(gt.shape)}")
        for s in self.steps:
            if s not in preds:
                raise InputError(f"predictions hold no entry for {s} sampling steps (have {sorted(preds)})")
            if preds[s].depth.shape != gt.shape:
                raise InputError(f"depth prediction {tuple(preds[s].depth.shape)} != gt_depth {tuple(gt.shape)}")
        metas = batch.get("meta") or [{}] * gt.shape[0]
        for b in range(gt.shape[0]):
            meta = metas[b]
            mask = eval_mask(gt[b, 0], min_depth=self.min_depth, max_depth=self.max_depth, crop=self.crop,
                             full_size=meta.get("full_size"), offset=meta.get("crop_offset", (0, 0)))
            if not mask.any():
                self.skipped += 1
                continue
            self.count += 1
            g = gt[b, 0][mask]
            for s in self.steps:
                d = preds[s].depth[b, 0].to(gt.device).clamp(self.min_depth, self.max_depth)
                errors = depth_errors(d[mask], g)
                self.sums[s] += torch.tensor([errors[k] for k in DEPTH_METRICS], dtype=torch.float64)
                ratio = torch.maximum(d / gt[b, 0].clamp(min=1e-6), gt[b, 0] / d)
                self.uncertainty[s].update(preds[s].uncertainty[b].to(gt.device), ratio >= 1.25, mask)
            if len(self.vis) < self.num_vis:
                self.vis.append({
                    "name": str(meta.get("name", len(self.vis))),
                    "image": batch["img"][b].cpu() if "img" in batch else None,
                    "gt": gt[b, 0].cpu(),
                    "pred": {s: preds[s].depth[b, 0].cpu() for s in self.steps},
                    "uncertainty": {s: preds[s].uncertainty[b].cpu() for s in self.steps},
                })

    def evaluate(self) -> dict[str, Any]:
        count = self.count.clone()
        sums = {s: self.sums[s].clone() for s in self.steps}
        skipped = torch.tensor(self.skipped, dtype=torch.int64)
        all_reduce_sum(count)
        all_reduce_sum(skipped)
        for s in self.steps:
            all_reduce_sum(sums[s])
        steps: dict[str, Any] = {}
        for s in self.steps:
            mean = (sums[s] / count).tolist() if count > 0 else [math.nan] * len(DEPTH_METRICS)
            steps[str(s)] = {
                "summary": {name: _finite_or_none(v) for name, v in zip(DEPTH_METRICS, mean)},
                "uncertainty": _reduced_stats(self.uncertainty[s]),
            }
        return {"task": "monocular depth", "metric": "AbsRel", "num_samples": int(count),
                "skipped_images": int(skipped), "crop": self.crop, "steps": steps,
                # shown as the literature reports them: ratios, metres and log units, not %
                "display_scale": {name: 1.0 for name in DEPTH_METRICS}}

    def visuals(self) -> dict[str, np.ndarray]:
        """First ``num_vis`` images: ground truth, depth and uncertainty per step count (metres)."""
        out = stack_visuals(self.vis, self.steps)
        if out:
            out["kind"] = np.array("scalar")
        return out
