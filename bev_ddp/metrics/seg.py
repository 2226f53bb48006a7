"""Semantic segmentation metrics: mIoU, mAcc, aAcc with an ignore label.

Definitions (the usual scene-parsing protocol; counts accumulate over the whole split, never
averaged per image):

* confusion ``C[g, p]`` = number of pixels with ground truth ``g`` predicted as ``p``; pixels whose
  ground truth is ``ignore_index`` are left out entirely.
* ``IoU_k = C[k,k] / (sum_p C[k,p] + sum_g C[g,k] - C[k,k])``, NaN when class ``k`` occurs neither
  in the ground truth nor in the prediction; ``mIoU`` is the mean over the non-NaN classes.
* ``Acc_k = C[k,k] / sum_p C[k,p]``, NaN when ``k`` is absent from the ground truth; ``mAcc`` is the
  mean over non-NaN classes.
* ``aAcc = trace(C) / sum(C)`` (pixel accuracy).

:class:`SegEvaluator` follows the evaluator contract of :mod:`bev_ddp.engine.task`
(``reset`` / ``process`` / ``evaluate``) and also scores the DDP uncertainty map: how well the
per-pixel uncertainty predicts a wrong label (AUROC and error rate per uncertainty bin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from bev_ddp.comm import all_reduce_sum
from bev_ddp.errors import InputError
from bev_ddp.metrics.uncertainty import UncertaintyHistogram


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """Confusion counts of one batch.

    Args:
        pred: long [..., H, W] predicted class ids in ``[0, num_classes)``.
        target: long [..., H, W] ground truth ids, ``ignore_index`` for unlabeled pixels.
    Returns:
        int64 [K, K] with rows = ground truth, columns = prediction.
    """
    if pred.shape != target.shape:
        raise InputError(f"prediction shape {tuple(pred.shape)} != ground truth shape {tuple(target.shape)}")
    target = target.long()
    pred = pred.long()
    valid = target != ignore_index
    gt_valid, pred_valid = target[valid], pred[valid]
    if gt_valid.numel() and (int(gt_valid.min()) < 0 or int(gt_valid.max()) >= num_classes):
        raise InputError(
            f"ground truth holds ids outside [0, {num_classes}) other than ignore {ignore_index}: "
            f"min {int(gt_valid.min())}, max {int(gt_valid.max())}"
        )
    if pred_valid.numel() and (int(pred_valid.min()) < 0 or int(pred_valid.max()) >= num_classes):
        raise InputError(f"prediction holds ids outside [0, {num_classes})")
    flat = gt_valid * num_classes + pred_valid
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


@dataclass
class SegScores:
    """Scores from one confusion matrix; per-class lists hold NaN for undefined classes."""

    miou: float
    macc: float
    aacc: float
    iou: list[float]
    acc: list[float]


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def scores_from_confusion(conf: torch.Tensor) -> SegScores:
    """mIoU / mAcc / aAcc from an int64 [K, K] confusion matrix (rows = ground truth)."""
    conf = conf.double()
    tp = conf.diag()
    gt_area = conf.sum(1)
    pred_area = conf.sum(0)
    union = gt_area + pred_area - tp
    nan = torch.full_like(tp, math.nan)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(gt_area > 0, tp / gt_area.clamp(min=1), nan)
    total = conf.sum()
    aacc = float(tp.sum() / total) if total > 0 else math.nan
    return SegScores(miou=_nanmean(iou), macc=_nanmean(acc), aacc=aacc, iou=iou.tolist(), acc=acc.tolist())


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _image_uint8(img: torch.Tensor, size: tuple[int, ...]) -> np.ndarray:
    """ImageNet-normalised [3, h, w] -> uint8 [H, W, 3] at the ground truth's size."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    rgb = (img.float() * std + mean).clamp(0, 1)
    if tuple(rgb.shape[-2:]) != tuple(size):
        rgb = torch.nn.functional.interpolate(rgb[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def stack_visuals(vis: list[dict[str, Any]], steps: Sequence[int]) -> dict[str, np.ndarray]:
    """Stack kept samples into numpy arrays (samples of another size than the first are dropped).

    Keys: ``gt`` [N, H, W], ``pred_<s>`` and ``uncertainty_<s>`` [N, H, W], ``image``
    [N, H, W, 3] uint8 (when the batch carried images), ``names`` [N], ``steps`` [S].
    """
    if not vis:
        return {}
    size = vis[0]["gt"].shape
    vis = [v for v in vis if v["gt"].shape == size]
    out = {"gt": np.stack([v["gt"].numpy() for v in vis]), "names": np.array([v["name"] for v in vis]),
           "steps": np.array(list(steps))}
    if all(v.get("image") is not None for v in vis):
        out["image"] = np.stack([_image_uint8(v["image"], size) for v in vis])
    for s in steps:
        out[f"pred_{s}"] = np.stack([v["pred"][s].numpy() for v in vis])
        out[f"uncertainty_{s}"] = np.stack([v["uncertainty"][s].float().numpy() for v in vis])
    return out


def _reduced_stats(hist: UncertaintyHistogram) -> dict[str, Any]:
    """Histogram statistics summed over all ranks (the local counts stay untouched)."""
    total = UncertaintyHistogram(hist.num_bins)
    total.counts = all_reduce_sum(hist.counts.clone())
    return total.stats().to_dict()


class SegEvaluator:
    """Accumulates confusion matrices per sampling step count over a split.

    ``process(batch, preds)`` takes ``batch["gt_seg"]`` long [B, H, W] and ``preds`` as returned by
    the segmentor's ``predict``: ``{steps: SegPrediction}`` with ``labels`` long [B, H, W] and
    ``uncertainty`` float [B, H, W].  ``evaluate()`` returns the report dict of
    :mod:`bev_ddp.report.writer` (fractions in [0, 1], None where undefined)::

        {"task": ..., "metric": "IoU", "classes": [...], "num_samples": N,
         "steps": {"3": {"summary": {"mIoU", "mAcc", "aAcc"}, "per_class": {cls: IoU},
                         "per_class_acc": {cls: Acc}, "uncertainty": {...}}}}

    and :meth:`visuals` the first ``num_vis`` samples' maps for the report figures.
    """

    def __init__(self, *, num_classes: int, steps: Sequence[int], class_names: Sequence[str] | None = None,
                 ignore_index: int = 255, num_vis: int = 0, uncertainty_bins: int = 10) -> None:
        self.num_classes = num_classes
        self.steps = [int(s) for s in steps]
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise InputError(f"class_names has {len(self.class_names)} names for {num_classes} classes")
        self.ignore_index = ignore_index
        self.num_vis = num_vis
        self.uncertainty_bins = uncertainty_bins
        self.reset()

    def reset(self) -> None:
        self.confusion = {s: torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64) for s in self.steps}
        self.uncertainty = {s: UncertaintyHistogram(self.uncertainty_bins) for s in self.steps}  # error = wrong label
        self.vis: list[dict[str, Any]] = []
        self.num_samples = 0

    def process(self, batch: dict[str, Any], preds: dict[int, Any]) -> None:
        target = batch["gt_seg"]
        self.num_samples += int(target.shape[0])
        for s in self.steps:
            if s not in preds:
                raise InputError(f"predictions hold no entry for {s} sampling steps (have {sorted(preds)})")
            labels = preds[s].labels.to(target.device)
            self.confusion[s] += confusion_matrix(labels, target, self.num_classes, self.ignore_index)
            valid = target != self.ignore_index
            self.uncertainty[s].update(preds[s].uncertainty.to(target.device), labels != target, valid)
        for b in range(target.shape[0]):
            if len(self.vis) >= self.num_vis:
                break
            self.vis.append({
                "name": str(batch.get("meta", [{}] * target.shape[0])[b].get("name", len(self.vis))),
                "image": batch["img"][b].cpu() if "img" in batch else None,
                "gt": target[b].cpu(),
                "pred": {s: preds[s].labels[b].cpu() for s in self.steps},
                "uncertainty": {s: preds[s].uncertainty[b].cpu() for s in self.steps},
            })

    def evaluate(self) -> dict[str, Any]:
        steps: dict[str, Any] = {}
        num_pixels = 0
        for s in self.steps:
            conf = all_reduce_sum(self.confusion[s].clone())
            num_pixels = int(conf.sum())
            scores = scores_from_confusion(conf)
            steps[str(s)] = {
                "summary": {"mIoU": _finite_or_none(scores.miou), "mAcc": _finite_or_none(scores.macc),
                            "aAcc": _finite_or_none(scores.aacc)},
                "per_class": {n: _finite_or_none(v) for n, v in zip(self.class_names, scores.iou)},
                "per_class_acc": {n: _finite_or_none(v) for n, v in zip(self.class_names, scores.acc)},
                "uncertainty": _reduced_stats(self.uncertainty[s]),
            }
        count = all_reduce_sum(torch.tensor(self.num_samples, dtype=torch.int64))
        return {"task": "image segmentation", "metric": "IoU", "classes": self.class_names,
                "num_samples": int(count), "num_pixels": num_pixels, "steps": steps}

    def visuals(self) -> dict[str, np.ndarray]:
        """First ``num_vis`` samples for the report's figure (see :func:`bev_ddp.report.plots.plot_maps`)."""
        out = stack_visuals(self.vis, self.steps)
        if out:
            out.update(kind=np.array("labels"), classes=np.array(self.class_names))
        return out


__all__ = ["confusion_matrix", "scores_from_confusion", "SegScores", "SegEvaluator"]
