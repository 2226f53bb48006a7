"""BEVFusion-protocol map IoU as an mmengine metric (``METRICS`` registry).

The counts are those of ``bev-ddp eval`` (:func:`bev_ddp.metrics.bev_iou.threshold_counts`, summed
over the split, then :func:`~bev_ddp.metrics.bev_iou.iou_from_counts`), per step count: IoU per
class and threshold, the per-class maximum over thresholds, ``mIoU`` (mean of the maxima) and
``mIoU@0.50``.  mmengine gathers the per-batch counts of every rank before :meth:`compute_metrics`.
The uncertainty statistics of ``bev-ddp eval`` are not computed here.

Keys (prefix ``bev_map``): ``<s>steps/mIoU``, ``<s>steps/mIoU@0.50``, ``<s>steps/IoU/<class>``,
``<s>steps/IoU/<class>@<t>`` (``t`` with two decimals).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.evaluator import BaseMetric

from bev_ddp.errors import InputError
from bev_ddp.integrations.mmdet3d.bev_config import load_bev_config
from bev_ddp.metrics.bev_iou import DEFAULT_THRESHOLDS, iou_from_counts, threshold_counts
from mmdet3d.registry import METRICS


@METRICS.register_module()
class BEVMapIoUMetric(BaseMetric):
    """Map IoU of ``pred_masks_bev_steps`` against ``gt_masks_bev`` (see the module docstring).

    Args:
        classes: class names in channel order.  steps: the step counts to score (each must be in
            every sample's ``pred_masks_bev_steps``).  thresholds: must include 0.5.
        config, overrides: a bev_ddp config whose ``data.classes`` / ``eval.steps`` fill what is not given.
    """

    default_prefix = "bev_map"

    def __init__(self, classes: Sequence[str] | None = None, steps: Sequence[int] | None = None,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, config: str | None = None,
                 overrides: Sequence[str] = (), collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if config is not None:  # the model's own classes and step counts: data.classes, eval.steps
            cfg = load_bev_config(config, overrides)
            classes = list(cfg.data.classes) if classes is None else classes
            steps = list(cfg.eval.steps) if steps is None else steps
        if not classes or not steps:
            raise InputError("BEVMapIoUMetric needs classes and steps")
        if not any(abs(float(t) - 0.5) < 1e-9 for t in thresholds):
            raise InputError(f"thresholds must include 0.5, got {list(thresholds)}")
        self.classes = list(classes)
        self.steps = [int(s) for s in steps]
        self.thresholds = [float(t) for t in thresholds]

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep int64 [S, 3, T, K] counts of each sample (S step counts, T thresholds, K classes)."""
        for sample in data_samples:
            if "gt_masks_bev" not in sample:
                raise InputError("a data sample has no gt_masks_bev (add BEVMapLabels and PackBEVMapInputs)")
            gt = torch.as_tensor(sample["gt_masks_bev"]).cpu()[None] > 0.5  # [1, K, X, Y]
            if gt.shape[1] != len(self.classes):
                raise InputError(f"gt_masks_bev has {gt.shape[1]} classes, the metric {len(self.classes)}")
            preds = sample.get("pred_masks_bev_steps", {})
            per_step = []
            for step in self.steps:
                if step not in preds:
                    raise InputError(f"predictions lack step count {step} (have {sorted(preds)})")
                probs = torch.as_tensor(preds[step]).detach().float().cpu()[None]  # [1, K, X, Y]
                if probs.shape != gt.shape:
                    raise InputError(f"pred_masks_bev_steps[{step}] is {tuple(probs.shape[1:])}, "
                                     f"gt_masks_bev {tuple(gt.shape[1:])}")
                per_step.append(threshold_counts(probs, gt, self.thresholds)[0])
            self.results.append(torch.stack(per_step))

    def compute_metrics(self, results: list) -> dict[str, float]:
        counts = torch.stack(results).sum(dim=0)  # [S, 3, T, K]
        fixed = min(range(len(self.thresholds)), key=lambda i: abs(self.thresholds[i] - 0.5))
        metrics: dict[str, float] = {}
        for si, step in enumerate(self.steps):
            iou = iou_from_counts(*counts[si])  # [T, K]
            best = iou.max(dim=0).values  # [K]
            metrics[f"{step}steps/mIoU"] = float(best.mean())
            metrics[f"{step}steps/mIoU@0.50"] = float(iou[fixed].mean())
            for k, name in enumerate(self.classes):
                metrics[f"{step}steps/IoU/{name}"] = float(best[k])
                for ti, t in enumerate(self.thresholds):
                    metrics[f"{step}steps/IoU/{name}@{t:.2f}"] = float(iou[ti, k])
        return metrics
