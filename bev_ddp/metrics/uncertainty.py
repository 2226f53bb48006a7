"""How well an uncertainty map predicts where the prediction is wrong.

Pixels are binned by uncertainty (``num_bins`` equal bins over [0, 1]); per bin we count pixels
and erroneous pixels.  From these histograms follow the error rate per bin and the AUROC of
"uncertainty as a score for error" (0.5 = no information, 1 = errors are exactly the most
uncertain pixels); pixels in one bin count as ties.  Counts add up across batches and ranks, so
the statistic covers a whole split.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

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

    def __init__(self, num_bins: int = 20):
        if num_bins < 1:
            raise InputError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins = num_bins
        self.counts = torch.zeros(2, num_bins, dtype=torch.int64)  # [correct, wrong] x bins

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
        bins = (u * self.num_bins).long().clamp_(max=self.num_bins - 1)  # value 1.0 falls in the last bin
        flat = e.long() * self.num_bins + bins  # [N] index into counts.view(-1)
        self.counts += torch.bincount(flat.cpu(), minlength=2 * self.num_bins).view(2, self.num_bins)

    def stats(self) -> UncertaintyStats:
        correct, wrong = self.counts[0].double(), self.counts[1].double()
        pixels = correct + wrong
        total_wrong, total_right = float(wrong.sum()), float(correct.sum())
        if total_wrong > 0 and total_right > 0:
            # P(u_wrong > u_right) + 0.5 P(tie): correct pixels in strictly lower bins, half of same bin
            below = torch.cumsum(correct, 0) - correct
            auroc = float(((below + 0.5 * correct) * wrong).sum() / (total_wrong * total_right))
        else:
            auroc = None
        total = total_wrong + total_right
        return UncertaintyStats(
            bin_edges=[i / self.num_bins for i in range(self.num_bins + 1)],
            pixels=[int(v) for v in pixels],
            errors=[int(v) for v in wrong],
            error_rate=[float(w / p) if p > 0 else None for w, p in zip(wrong, pixels)],
            auroc=auroc,
            overall_error_rate=total_wrong / total if total > 0 else 0.0,
        )
