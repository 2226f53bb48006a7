"""BEVGridTransform: resample a BEV map from the encoder grid to the map-label grid.

BEVFusion's encoder grid is ±51.2 m at 0.8 m (128 cells); the labels are ±50 m at 0.5 m (200 cells).
Output cell centres are located in the input grid and sampled bilinearly (``grid_sample``,
``align_corners=False``, zeros outside).  Axes are ``[B, C, X, Y]`` on both sides.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.data.geometry import Bound


class BEVGridTransform(nn.Module):
    """Args: input_scope, output_scope: ((lower, upper, step) for x, (lower, upper, step) for y), metres."""

    def __init__(self, *, input_scope: Sequence[Sequence[float]], output_scope: Sequence[Sequence[float]]):
        super().__init__()
        inputs = [Bound.of(s) for s in input_scope]
        outputs = [Bound.of(s) for s in output_scope]
        axes = []
        for src, dst in zip(inputs, outputs):
            centres = torch.arange(dst.cells, dtype=torch.float32) * dst.step + dst.lower + dst.step / 2
            axes.append((centres - src.lower) / (src.upper - src.lower) * 2 - 1)  # normalised [-1, 1]
        gx, gy = torch.meshgrid(axes[0], axes[1], indexing="ij")  # [X_out, Y_out]
        # grid_sample's last dim is (w, h) = (y, x) for [B, C, X, Y] inputs
        self.register_buffer("grid", torch.stack([gy, gx], dim=-1), persistent=False)  # [X_out, Y_out, 2]
        self.output_size = (outputs[0].cells, outputs[1].cells)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, X_in, Y_in] → [B, C, X_out, Y_out]."""
        grid = self.grid.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1, -1)  # [B, X_out, Y_out, 2]
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
