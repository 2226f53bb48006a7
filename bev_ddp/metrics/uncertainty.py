"""How well an uncertainty map predicts where the prediction is wrong.

Pixels are binned by uncertainty (``num_bins`` equal bins over [0, 1]); per bin we count pixels
and erroneous pixels.  From these histograms follow the error rate per bin and the AUROC of
"uncertainty as a score for error" (0.5 = no information, 1 = errors are exactly the most
uncertain pixels); pixels in one bin count as ties.  Counts add up across batches and ranks, so
the statistic covers a whole split.  ``resolution`` finer bins may be kept for the AUROC (continuous
scores such as entropies crowd near 0, where coarse bins would turn most pairs into ties); the
reported per-bin error rates always use ``num_bins``.

Calibration (:class:`CalibrationHistogram`): binary predictions with probability ``p`` of the
positive class are binned by ``p``; per bin the mean ``p`` against the observed positive rate is
the reliability diagram, and ECE = Σ_b (n_b / N) |mean p_b - positive rate_b|.

:class:`MultiLabelUncertaintyScores` applies both to the estimators of
:mod:`bev_ddp.diffusion.uncertainty` for a multi-label (BEV) map, with two error definitions:

* ``class_cells``: every (class, cell) pair is one binary prediction; it is wrong when the class's
  mask at threshold 0.5 differs from the ground truth; its score is that class's uncertainty.
* ``pixels``: a cell is wrong when any class is wrong; its score is the maximum over classes
  (``error_probability``: the chance that any class is wrong, 1 - Π_k (1 - e_k)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from bev_ddp.diffusion.uncertainty import PIXEL_REDUCTIONS, pixel_max
from bev_ddp.errors import InputError


@dataclass
class UncertaintyStats:
    """Histogram summary; every list has one entry per bin."""

    bin_edges: list[float]
    pixels: list[int]
    errors: list[int]
    error_rate: list[float | None]  # None for empty bins
    auroc: float | None  # None when all pixels are right or all are wrong
    overall_error_rate: float

    def to_dict(self) -> dict:
        return {
            "bin_edges": self.bin_edges,
            "pixels": self.pixels,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "auroc": self.auroc,
            "overall_error_rate": self.overall_error_rate,
        }


class UncertaintyHistogram:
    """Accumulates (uncertainty, error) pairs into ``num_bins`` bins over [0, 1]."""

    def __init__(self, num_bins: int = 20, resolution: int | None = None):
        if num_bins < 1:
            raise InputError(f"num_bins must be >= 1, got {num_bins}")
        resolution = num_bins if resolution is None else resolution
        if resolution < num_bins or resolution % num_bins:
            raise InputError(f"resolution {resolution} must be a multiple of num_bins {num_bins}")
        self.num_bins = num_bins
        self.resolution = resolution
        self.counts = torch.zeros(2, resolution, dtype=torch.int64)  # [correct, wrong] x fine bins

    def reset(self) -> None:
        self.counts.zero_()

    def update(self, uncertainty: torch.Tensor, error: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add pixels.

        Args:
            uncertainty: [...] values in [0, 1] (clamped).
            error: [...] bool, same shape: the prediction at this pixel is wrong.
            valid: optional [...] bool mask of pixels to count.
        """
        if uncertainty.shape != error.shape:
            raise InputError(f"uncertainty {tuple(uncertainty.shape)} and error {tuple(error.shape)} differ in shape")
        u = uncertainty.detach().float().clamp(0.0, 1.0).reshape(-1)
        e = error.detach().reshape(-1).bool()
        if valid is not None:
            keep = valid.detach().reshape(-1).bool()
            u, e = u[keep], e[keep]
        n = self.resolution
        bins = (u * n).long().clamp_(max=n - 1)  # value 1.0 falls in the last bin
        flat = e.long() * n + bins  # [N] index into counts.view(-1)
        self.counts += torch.bincount(flat.cpu(), minlength=2 * n).view(2, n)

    def stats(self) -> UncertaintyStats:
        fine_correct, fine_wrong = self.counts[0].double(), self.counts[1].double()
        total_wrong, total_right = float(fine_wrong.sum()), float(fine_correct.sum())
        if total_wrong > 0 and total_right > 0:
            # P(u_wrong > u_right) + 0.5 P(tie): correct pixels in strictly lower bins, half of same bin
            below = torch.cumsum(fine_correct, 0) - fine_correct
            auroc = float(((below + 0.5 * fine_correct) * fine_wrong).sum() / (total_wrong * total_right))
        else:
            auroc = None
        group = self.resolution // self.num_bins
        correct = fine_correct.view(self.num_bins, group).sum(dim=1)  # [num_bins]
        wrong = fine_wrong.view(self.num_bins, group).sum(dim=1)
        pixels = correct + wrong
        total = total_wrong + total_right
        return UncertaintyStats(
            bin_edges=[i / self.num_bins for i in range(self.num_bins + 1)],
            pixels=[int(v) for v in pixels],
            errors=[int(v) for v in wrong],
            error_rate=[float(w / p) if p > 0 else None for w, p in zip(wrong, pixels)],
            auroc=auroc,
            overall_error_rate=total_wrong / total if total > 0 else 0.0,
        )


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class CalibrationStats:
    """Reliability diagram data of binary probabilities; lists have one entry per bin."""

    bin_edges: list[float]
    count: list[int]
    mean_probability: list[float | None]  # None for empty bins
    positive_rate: list[float | None]
    ece: float | None  # None without any prediction

    def to_dict(self) -> dict:
        return {
            "bin_edges": self.bin_edges,
            "count": self.count,
            "mean_probability": self.mean_probability,
            "positive_rate": self.positive_rate,
            "ece": self.ece,
        }


class CalibrationHistogram:
    """Accumulates (probability of the positive class, label) pairs into ``num_bins`` bins over [0, 1]."""

    def __init__(self, num_bins: int = 15):
        if num_bins < 1:
            raise InputError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins = num_bins
        self.sums = torch.zeros(3, num_bins, dtype=torch.float64)  # [count, Σ p, Σ label] x bins

    def reset(self) -> None:
        self.sums.zero_()

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """probs [...] in [0, 1] (clamped), labels [...] bool of the same shape."""
        if probs.shape != labels.shape:
            raise InputError(f"probs {tuple(probs.shape)} and labels {tuple(labels.shape)} differ in shape")
        p = probs.detach().float().clamp(0.0, 1.0).reshape(-1).cpu()
        y = labels.detach().reshape(-1).cpu().double()
        bins = (p * self.num_bins).long().clamp_(max=self.num_bins - 1)
        self.sums[0] += torch.bincount(bins, minlength=self.num_bins).double()
        self.sums[1] += torch.bincount(bins, weights=p.double(), minlength=self.num_bins)
        self.sums[2] += torch.bincount(bins, weights=y, minlength=self.num_bins)

    def stats(self, reduce: Callable[[torch.Tensor], torch.Tensor] = _identity) -> CalibrationStats:
        count, sum_p, sum_y = reduce(self.sums.clone())
        total = float(count.sum())
        filled = count > 0
        mean_p = torch.where(filled, sum_p / count.clamp_min(1), torch.zeros_like(sum_p))
        rate = torch.where(filled, sum_y / count.clamp_min(1), torch.zeros_like(sum_y))
        ece = float(((count / total) * (mean_p - rate).abs()).sum()) if total > 0 else None
        return CalibrationStats(
            bin_edges=[i / self.num_bins for i in range(self.num_bins + 1)],
            count=[int(v) for v in count],
            mean_probability=[float(v) if f else None for v, f in zip(mean_p, filled)],
            positive_rate=[float(v) if f else None for v, f in zip(rate, filled)],
            ece=ece,
        )


ERROR_DEFINITIONS = {
    "class_cells": "every (class, cell) pair; wrong when that class's mask at 0.5 differs from the ground truth",
    "pixels": "every cell; wrong when any class's mask at 0.5 is wrong; score = maximum over classes "
              "(error_probability: 1 - prod_k (1 - e_k))",
}


class MultiLabelUncertaintyScores:
    """Error detection (AUROC, error rate per bin) of several per-class uncertainty estimators,
    plus calibration of the probabilities, for multi-label maps [B, K, H, W].

    Args:
        num_bins: reported uncertainty bins (error rate per bin).
        resolution: fine bins behind the AUROC.
        calibration_bins: reliability diagram bins.
        threshold: where a class's mask switches on.
    """

    def __init__(self, *, num_bins: int = 20, resolution: int = 1000, calibration_bins: int = 15,
                 threshold: float = 0.5):
        self.num_bins, self.resolution, self.threshold = num_bins, resolution, threshold
        self.histograms: dict[str, dict[str, UncertaintyHistogram]] = {}
        self.calibration = CalibrationHistogram(calibration_bins)

    def reset(self) -> None:
        self.histograms = {}
        self.calibration.reset()

    def update(self, probs: torch.Tensor, gt: torch.Tensor, estimators: dict[str, torch.Tensor]) -> None:
        """Add one batch.

        Args:
            probs: [B, K, H, W] probabilities the map is thresholded from.
            gt: [B, K, H, W] bool ground truth.
            estimators: ``{name: [B, K, H, W] in [0, 1]}`` per-class uncertainty.
        """
        if probs.shape != gt.shape:
            raise InputError(f"probs {tuple(probs.shape)} and ground truth {tuple(gt.shape)} differ in shape")
        probs, gt = probs.detach().float().cpu(), gt.detach().cpu().bool()
        wrong = (probs >= self.threshold) != gt  # [B, K, H, W]
        wrong_pixel = wrong.any(dim=1)  # [B, H, W]
        self.calibration.update(probs, gt)
        for name, unc in estimators.items():
            if unc.shape != probs.shape:
                raise InputError(f"estimator {name!r} has shape {tuple(unc.shape)}, expected {tuple(probs.shape)}")
            unc = unc.detach().float().cpu()
            hists = self.histograms.setdefault(
                name, {d: UncertaintyHistogram(self.num_bins, self.resolution) for d in ERROR_DEFINITIONS})
            hists["class_cells"].update(unc, wrong)
            hists["pixels"].update(PIXEL_REDUCTIONS.get(name, pixel_max)(unc), wrong_pixel)

    def to_dict(self, reduce: Callable[[torch.Tensor], torch.Tensor] = _identity) -> dict:
        """``{"definitions": ..., "estimators": {name: {definition: stats}}, "calibration": stats}``.

        ``reduce`` sums count tensors over ranks (e.g. ``all_reduce_sum``); the accumulators are untouched.
        """
        estimators = {}
        for name, hists in self.histograms.items():
            estimators[name] = {}
            for definition, hist in hists.items():
                merged = UncertaintyHistogram(hist.num_bins, hist.resolution)
                merged.counts = reduce(hist.counts.clone())
                estimators[name][definition] = merged.stats().to_dict()
        return {"definitions": dict(ERROR_DEFINITIONS), "estimators": estimators,
                "calibration": self.calibration.stats(reduce).to_dict()}
