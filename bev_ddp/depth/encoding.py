"""Continuous depth encoding for the DDP head, read through the ReLU output of the depth head.

The core :class:`~bev_ddp.diffusion.encoding.ContinuousEncoder` encodes ground truth as
``((d - min) / (max - min) * 2 - 1) * scale`` (scale 0.1) with valid-mask-aware downsampling of
sparse depth.  Its decoder-output reading is a sigmoid over the range; the depth head here reads
the decoder output as ``ReLU(logits) * unit + min_depth`` metres instead (see
:mod:`bev_ddp.depth.losses`), so :class:`ReLUDepthEncoder` re-encodes predictions (DDIM step,
Alg. 2; self-aligned denoising, Alg. 4) through that same reading.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bev_ddp.depth.losses import depth_from_logits
from bev_ddp.diffusion.encoding import ContinuousEncoder
from bev_ddp.errors import InputError


class ReLUDepthEncoder(ContinuousEncoder):
    """Continuous encoding whose predictions are ``ReLU(logits) * unit + min_value`` metres.

    Args:
        min_value, max_value: depth range in metres (e.g. 1e-3 and 80 for KITTI).
        scale: encoded range [-scale, scale] (0.1).  num_bins: log-depth bins of ``discretize``
            (their step-to-step changes make the uncertainty map).
        unit: metres per unit of the decoder output.
        target_downsample: ``masked`` (mean over the valid pixels of each cell; cells without any
            encode as 0) or ``bilinear`` (the DDP authors': bilinear resize with the missing pixels'
            zeros blended in, every cell encoded, an all-missing cell as the range minimum).
    """

    def __init__(self, *, min_value: float, max_value: float, scale: float = 0.1, num_bins: int = 64,
                 unit: float = 1.0, target_downsample: str = "masked") -> None:
        if min_value <= 0:
            raise InputError(f"ReLUDepthEncoder needs min_value > 0 (log-depth bins), got {min_value}")
        if target_downsample not in ("masked", "bilinear"):
            raise InputError(f"target_downsample must be 'masked' or 'bilinear', got {target_downsample!r}")
        super().__init__(min_value=min_value, max_value=max_value, scale=scale, num_bins=num_bins)
        self.unit = float(unit)
        self.target_downsample = target_downsample

    def prepare_target(self, target: torch.Tensor, size: tuple[int, int] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth [B, 1, H, W] -> (values, valid) at ``size`` by ``target_downsample``."""
        values, valid = super().prepare_target(target, size)
        if self.target_downsample == "masked" or size is None or tuple(target.shape[-2:]) == tuple(size):
            return values, valid
        values = F.interpolate(target, size=tuple(size), mode="bilinear", align_corners=False)  # [B, 1, h, w]
        return values, torch.ones_like(values, dtype=torch.bool)

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, 1, H, W] -> depth in metres (>= min_value)."""
        return depth_from_logits(logits, self.min_value, self.unit)

    def encode_prediction(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output -> encoded depth [B, 1, H, W] in [-scale, scale] (clamped to the range)."""
        return self.normalise(self.decode(logits)) * self.scale

    def discretize(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output -> int64 log-depth bin [B, 1, H, W] in 0..num_bins-1.

        Bins are equal in ``log(d / min_value)`` over [min_value, max_value], so a "change" between
        sampling steps is a relative depth change (64 bins over 1e-3..80 m: about 19 % per bin,
        close to the δ1 threshold of 25 %), not an absolute one that would flag every far pixel.
        """
        depth = self.decode(logits).clamp(self.min_value, self.max_value)
        unit = torch.log(depth / self.min_value) / math.log(self.max_value / self.min_value)  # [0, 1]
        return (unit * self.num_bins).long().clamp_(0, self.num_bins - 1)
