"""Fixed 2-D sine positional encoding (DETR / Deformable DETR style, normalised coordinates).

Computed in float32 (autocast does not touch it: only elementwise ops); pass ``dtype`` to cast the
result, e.g. for a model that runs wholly in float64.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionalEncoding(nn.Module):
    """Sine/cosine encoding of pixel positions; no weights.

    Row and column indices ``i`` (1-based) are normalised to ``(i + offset) / n * scale`` and each
    is expanded to ``num_feats`` channels ``sin/cos(pos / temperature^(2k / num_feats))``
    (interleaved).  Output channels = ``2 * num_feats`` (y first, then x).

    Args:
        num_feats: channels per axis (embed_dims / 2).
        temperature: wavelength base.  scale, offset: normalisation (2 pi and -0.5 as in
            Deformable DETR, so positions are pixel centres in (0, 2 pi)).
    """

    def __init__(self, *, num_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi,
                 offset: float = -0.5) -> None:
        super().__init__()
        if num_feats < 2 or num_feats % 2:
            raise ValueError(f"num_feats must be an even number >= 2, got {num_feats}")
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale
        self.offset = offset

    def _axis(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        pos = (torch.arange(1, n + 1, device=device, dtype=torch.float32) + self.offset) / n * self.scale  # [n]
        k = torch.arange(self.num_feats, device=device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_feats)  # [F]
        angles = pos[:, None] / dim_t  # [n, F]
        enc = torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)  # [n, F]
        return enc.to(dtype)

    def forward(self, height: int, width: int, *, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Returns [height * width, 2 * num_feats], row-major over (y, x)."""
        pos_y = self._axis(height, torch.device(device), dtype)[:, None, :].expand(height, width, -1)  # [H, W, F]
        pos_x = self._axis(width, torch.device(device), dtype)[None, :, :].expand(height, width, -1)  # [H, W, F]
        return torch.cat([pos_y, pos_x], dim=-1).reshape(height * width, 2 * self.num_feats)  # [H*W, 2F]
