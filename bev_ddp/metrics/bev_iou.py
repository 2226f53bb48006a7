"""BEV map segmentation IoU, BEVFusion's protocol, for several DDP step counts at once.

For every class k and threshold t in {0.35, 0.40, ..., 0.65} the predicted mask is
``prob >= t``; true positives, false positives and false negatives are summed over the whole
split (not averaged per sample), then ``IoU = tp / (tp + fp + fn + 1e-7)``.  Reported per step
count: IoU per class and threshold, the per-class maximum over thresholds, ``mIoU`` = mean of the
per-class maxima (BEVFusion's headline number) and ``mIoU@0.50`` at the single threshold 0.5
(the honest number: one threshold for all classes, not tuned on the split).

Uncertainty against error (per step count): a pixel is wrong when any class's mask at threshold
0.5 differs from the ground truth; :class:`~bev_ddp.metrics.uncertainty.UncertaintyHistogram`
relates the model's uncertainty map to these errors (AUROC, error rate per uncertainty bin).
``uncertainty_estimators`` scores every estimator of :func:`bev_ddp.diffusion.uncertainty.multilabel_estimators`
(change count, entropy of the mean probability, and, when the prediction carries K noise draws in
``draw_step_probs``, mutual information / variance / disagreement across draws) under both error
definitions of :class:`~bev_ddp.metrics.uncertainty.MultiLabelUncertaintyScores`, with the
calibration (ECE, reliability diagram) of the probabilities.

Counts live on each rank; :meth:`BEVIoUEvaluator.evaluate` sums them over ranks
(``all_reduce``) before computing anything, so every rank returns the split's metrics.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from bev_ddp.comm import all_reduce_sum
from bev_ddp.diffusion.uncertainty import multilabel_estimators
from bev_ddp.errors import InputError
from bev_ddp.metrics.uncertainty import MultiLabelUncertaintyScores, UncertaintyHistogram

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65)
EPS = 1e-7


def iou_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Elementwise ``tp / (tp + fp + fn + 1e-7)`` in float64."""
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    return tp / (tp + fp + fn + EPS)


def threshold_counts(probs: torch.Tensor, gt: torch.Tensor,
                     thresholds: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tp, fp, fn) per threshold and class of one batch, and the thresholded masks.

    Args:
        probs: [B, K, X, Y] probabilities.  gt: bool [B, K, X, Y].  thresholds: T values.

    Returns:
        int64 [3, T, K] counts summed over the batch and the grid; bool [T, B, K, X, Y] masks
        ``probs >= t``.
    """
    thr = torch.tensor([float(t) for t in thresholds]).view(-1, 1, 1, 1, 1)  # [T, 1, 1, 1, 1]
    hard = probs.unsqueeze(0) >= thr  # [T, B, K, X, Y]
    tp = (hard & gt).sum(dim=(1, 3, 4))  # [T, K]
    fp = (hard & ~gt).sum(dim=(1, 3, 4))
    fn = (~hard & gt).sum(dim=(1, 3, 4))
    return torch.stack([tp, fp, fn]), hard


def _half_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy().astype(np.float16)


def draw_step_probs(pred: Any) -> list[list[torch.Tensor]]:
    """``[draw][step]`` probabilities [B, K, X, Y] of a prediction: its ``draw_step_probs`` when it
    has K noise draws, else one draw of its ``step_probs`` (or just ``probs``)."""
    draws = getattr(pred, "draw_step_probs", None)
    if draws:
        return [[p.detach().float().cpu() for p in steps] for steps in draws]
    steps = getattr(pred, "step_probs", None) or [pred.probs]
    return [[p.detach().float().cpu() for p in steps]]


class BEVIoUEvaluator:
    """Accumulates BEV IoU counts over a split, per step count (detectron2-style evaluator).

    Args:
        classes: class names, in the channel order of predictions and ground truth.
        steps: the sampling step counts whose predictions :meth:`process` receives.
        thresholds: probability thresholds (must contain 0.5 for ``mIoU@0.50``).
        num_vis: keep the first ``num_vis`` samples' maps (ground truth, probabilities and
            uncertainty per step count) for the report's figures; see :meth:`visuals`.
        uncertainty_bins: bins of the uncertainty-vs-error histogram.
        gt_key: batch key of the ground truth, float/bool ``[B, K, X, Y]``.
        grid: optional ``(xbound, ybound)`` of the label grid, each (min, max, step) m in the LiDAR
            frame; passed on in :meth:`visuals` so figures get metre ticks.
        protocol: how the predictions were made (e.g. ``DDP: mean sigmoid of 4 draws x all
            steps``), written into the metrics so figures are never compared across protocols.

    ``process(batch, preds)`` takes ``preds[s]`` with ``probs`` ``[B, K, X, Y]`` (probabilities
    in [0, 1]) and ``uncertainty`` ``[B, X, Y]`` (in [0, 1], may be ``None``).
    """

    metric_name = "IoU"

    def __init__(
        self,
        *,
        classes: Sequence[str],
        steps: Sequence[int],
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        num_vis: int = 0,
        uncertainty_bins: int = 20,
        gt_key: str = "gt_masks_bev",
        grid: tuple[Sequence[float], Sequence[float]] | None = None,
        protocol: str | None = None,
    ):
        if not classes:
            raise InputError("classes must not be empty")
        if not steps:
            raise InputError("steps must not be empty")
        if any(int(s) < 1 for s in steps):
            raise InputError(f"step counts must be >= 1, got {list(steps)}")
        if not any(abs(t - 0.5) < 1e-9 for t in thresholds):
            raise InputError(f"thresholds must include 0.5, got {list(thresholds)}")
        self.classes = list(classes)
        self.steps = [int(s) for s in steps]
        self.thresholds = [float(t) for t in thresholds]
        self.num_vis = num_vis
        self.gt_key = gt_key
        self.grid = grid
        self.protocol = protocol
        self._fixed_index = min(range(len(self.thresholds)), key=lambda i: abs(self.thresholds[i] - 0.5))
        self._uncertainty = {s: UncertaintyHistogram(uncertainty_bins) for s in self.steps}
        self._estimators = {s: MultiLabelUncertaintyScores(num_bins=uncertainty_bins) for s in self.steps}
        self.reset()

    def reset(self) -> None:
        # [steps, (tp, fp, fn), thresholds, classes]
        self.counts = torch.zeros(len(self.steps), 3, len(self.thresholds), len(self.classes), dtype=torch.int64)
        self.num_samples = 0
        self.degraded = torch.zeros(2, dtype=torch.int64)  # (samples missing a camera, missing images)
        for hist in self._uncertainty.values():
            hist.reset()
        for scores in self._estimators.values():
            scores.reset()
        self._vis: dict[str, list[np.ndarray]] = {}
        self._vis_names: list[str] = []

    def _check(self, name: str, tensor: Any, shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(tensor).__name__}")
        if tuple(tensor.shape) != shape:
            raise InputError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")
        return tensor

    def process(self, batch: dict[str, Any], preds: dict[int, Any]) -> None:
        if self.gt_key not in batch:
            raise KeyError(f"batch has no ground truth {self.gt_key!r} (keys: {', '.join(batch)})")
        gt = batch[self.gt_key]
        if gt.dim() != 4 or gt.shape[1] != len(self.classes):
            raise InputError(f"{self.gt_key} has shape {tuple(gt.shape)}, expected [B, {len(self.classes)}, X, Y]")
        gt = gt.detach().cpu() > 0.5  # [B, K, X, Y] bool
        valid = batch.get("camera_valid")
        if isinstance(valid, torch.Tensor):  # [B, N_cam]: a run on zero images is reported as degraded
            missing = ~valid.detach().cpu().bool()
            self.degraded += torch.tensor([int(missing.any(dim=1).sum()), int(missing.sum())])
        shape = tuple(gt.shape)
        for si, step in enumerate(self.steps):
            if step not in preds:
                raise KeyError(f"predictions lack step count {step} (have {sorted(preds)})")
            probs = self._check(f"probs for {step} step(s)", preds[step].probs, shape).detach().float().cpu()
            if not torch.isfinite(probs).all():
                raise InputError(f"probs for {step} step(s) contain NaN or inf")
            counts, hard = threshold_counts(probs, gt, self.thresholds)
            self.counts[si] += counts
            error = (hard[self._fixed_index] != gt).any(dim=1)  # [B, X, Y]
            unc = getattr(preds[step], "uncertainty", None)
            if unc is not None:
                unc = self._check(f"uncertainty for {step} step(s)", unc, (shape[0], *shape[2:]))
                self._uncertainty[step].update(unc.cpu(), error)
            self._estimators[step].update(probs, gt, multilabel_estimators(draw_step_probs(preds[step])))
        self._keep_visuals(batch, gt, preds)
        self.num_samples += shape[0]

    def _keep_visuals(self, batch: dict[str, Any], gt: torch.Tensor, preds: dict[int, Any]) -> None:
        metas = batch.get("meta") or [{} for _ in range(gt.shape[0])]
        for b in range(gt.shape[0]):
            if len(self._vis_names) >= self.num_vis:
                return
            meta = metas[b] if isinstance(metas[b], dict) else {}
            self._vis_names.append(str(meta.get("token", f"sample {self.num_samples + b}")))
            self._vis.setdefault("gt", []).append(gt[b].numpy().astype(np.uint8))
            for step in self.steps:
                self._vis.setdefault(f"probs_{step}", []).append(_half_numpy(preds[step].probs[b]))
                unc = getattr(preds[step], "uncertainty", None)
                if unc is not None:
                    self._vis.setdefault(f"uncertainty_{step}", []).append(_half_numpy(unc[b]))

    def visuals(self) -> dict[str, np.ndarray]:
        """Arrays for :func:`bev_ddp.report.write_report`'s map figures (this rank's first samples).

        Keys: ``kind`` ("multilabel"), ``classes``, ``names`` (sample tokens), ``steps``,
        ``gt`` [N, K, X, Y] uint8, ``probs_<s>`` [N, K, X, Y] float16, ``uncertainty_<s>`` [N, X, Y];
        ``xbound`` / ``ybound`` when the grid is known.
        """
        if not self._vis_names:
            return {}
        out = {k: np.stack(v) for k, v in self._vis.items()}
        out.update(
            kind=np.array("multilabel"), frame=np.array("bev"), classes=np.array(self.classes),
            names=np.array(self._vis_names),
            steps=np.array(self.steps),
        )
        if self.grid is not None:
            out.update(xbound=np.array(self.grid[0], dtype=np.float64), ybound=np.array(self.grid[1], dtype=np.float64))
        return out

    def evaluate(self) -> dict[str, Any]:
        """Metrics of the whole split (summed over ranks), JSON-serialisable."""
        counts = all_reduce_sum(self.counts.clone())
        num_samples = int(all_reduce_sum(torch.tensor([self.num_samples], dtype=torch.int64)).item())
        per_step: dict[str, Any] = {}
        for si, step in enumerate(self.steps):
            tp, fp, fn = counts[si]  # each [T, K]
            iou = iou_from_counts(tp, fp, fn)  # [T, K]
            best, best_idx = iou.max(dim=0)  # [K]
            hist = UncertaintyHistogram(self._uncertainty[step].num_bins)
            hist.counts = all_reduce_sum(self._uncertainty[step].counts.clone())
            per_step[str(step)] = {
                "per_class": {c: float(best[k]) for k, c in enumerate(self.classes)},
                "per_class@0.50": {c: float(iou[self._fixed_index, k]) for k, c in enumerate(self.classes)},
                "best_threshold": {c: self.thresholds[int(best_idx[k])] for k, c in enumerate(self.classes)},
                "summary": {
                    "mIoU": float(best.mean()),
                    "mIoU@0.50": float(iou[self._fixed_index].mean()),
                },
                "per_threshold": {
                    "thresholds": self.thresholds,
                    "per_class": {c: [float(v) for v in iou[:, k]] for k, c in enumerate(self.classes)},
                    "mean": [float(v) for v in iou.mean(dim=1)],
                },
                "counts": {name: counts[si, i].tolist() for i, name in enumerate(("tp", "fp", "fn"))},
                "uncertainty": hist.stats().to_dict(),
                "uncertainty_estimators": self._estimators[step].to_dict(all_reduce_sum),
            }
        degraded = all_reduce_sum(self.degraded.clone()).tolist()
        return {
            "task": "bev",
            "metric": self.metric_name,
            "classes": self.classes,
            "num_samples": num_samples,
            "degraded": {"samples_missing_cameras": degraded[0], "missing_camera_images": degraded[1]},
            "protocol": self.protocol,
            "steps": per_step,
        }
