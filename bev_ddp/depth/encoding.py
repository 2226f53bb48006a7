"""Continuous depth encoding for the DDP head, read through the ReLU + min_depth output.

The core :class:`~bev_ddp.diffusion.encoding.ContinuousEncoder` encodes ground truth as
``((d - min) / (max - min) * 2 - 1) * scale`` (scale 0.1) with valid-mask-aware downsampling of
sparse depth.  Its decoder-output reading is a sigmoid over the range; the depth head here reads
the decoder output as ``ReLU(logits) + min_depth`` metres instead (see
:mod:`bev_ddp.depth.losses`), so :class:`ReLUDepthEncoder` re-encodes predictions (DDIM step,
Alg. 2; self-aligned denoising, Alg. 4) through that same reading.
"""
from __future__ import annotations

import torch

from bev_ddp.depth.losses import depth_from_logits
from bev_ddp.diffusion.encoding import ContinuousEncoder


class ReLUDepthEncoder(ContinuousEncoder):
    """Continuous encoding whose predictions are ``ReLU(logits) + min_value`` metres.

    Args:
        min_value, max_value: depth range in metres (e.g. 1e-3 and 80 for KITTI).
        scale: encoded range [-scale, scale] (0.1).  num_bins: bins of ``discretize`` (uncertainty).
    """

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, 1, H, W] -> depth in metres (>= min_value)."""
        return depth_from_logits(logits, self.min_value)

    def encode_prediction(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output -> encoded depth [B, 1, H, W] in [-scale, scale] (clamped to the range)."""
        return self.normalise(self.decode(logits)) * self.scale

    def discretize(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output -> int64 depth bin [B, 1, H, W] in 0..num_bins-1 over [min_value, max_value]."""
        unit = (self.normalise(self.decode(logits)) + 1) / 2  # [0, 1]
        return (unit * self.num_bins).long().clamp_(max=self.num_bins - 1)
