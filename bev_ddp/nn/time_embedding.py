"""Noise-level conditioning of the map decoder: learned sinusoidal embedding of the time input + FiLM.

The decoder is told how noisy its input map is through its time input ``x`` [B]: log-SNR by
default (the DDP authors' segmentation and BEV models) or the time ``t`` in [0, 1] (their depth
model; :class:`bev_ddp.nn.DDPHead`'s ``time_input``), embedded with learned random Fourier
features (Kingma et al. 2021, "variational diffusion models"):
``[x, sin(2 pi w x), cos(2 pi w x)]`` with ``freq_dims / 2`` learned frequencies ``w``
(8 by default -> 17 values), then an MLP ``Linear(17, T) -> GELU -> Linear(T, T)``.
Every decoder layer owns a :class:`TimeFiLM` that turns this embedding into a per-channel
``(scale, shift)`` and modulates the queries: ``q * (1 + scale) + shift``.

Precision: log-SNR spans about [-19, 12] and the learned frequencies are O(1), so the angles
reach hundreds of radians; rounded to float16 (bfloat16) before the sines they would be off by
up to 0.007 (0.048).  The embedding and the FiLM projections therefore run in float32 with
autocast switched off (they are [B, 17] -> [B, 1024] -> [B, 2C] matmuls: negligible work).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bev_ddp.errors import InputError


class LearnedSinusoidalEmbedding(nn.Module):
    """``x [B] -> [B, freq_dims + 1]`` = ``[x, sin(2 pi w x), cos(2 pi w x)]`` with learned ``w``.

    Args:
        freq_dims: even number; ``freq_dims / 2`` learned frequencies (init N(0, 1)).
    """

    def __init__(self, *, freq_dims: int = 16) -> None:
        super().__init__()
        if freq_dims < 2 or freq_dims % 2:
            raise InputError(f"freq_dims must be an even number >= 2, got {freq_dims}")
        self.weights = nn.Parameter(torch.randn(freq_dims // 2))
        self.out_dims = freq_dims + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weights.dtype)  # [B] float32 (never a 16-bit time input)
        angles = x[:, None] * self.weights[None, :] * (2 * math.pi)  # [B, F/2]
        return torch.cat([x[:, None], angles.sin(), angles.cos()], dim=-1)  # [B, F+1]


class TimeEmbedding(nn.Module):
    """Time input [B] (log-SNR or t) -> [B, time_dims]: sinusoidal features -> Linear -> GELU -> Linear."""

    def __init__(self, *, time_dims: int = 1024, freq_dims: int = 16) -> None:
        super().__init__()
        self.features = LearnedSinusoidalEmbedding(freq_dims=freq_dims)
        self.mlp = nn.Sequential(
            nn.Linear(self.features.out_dims, time_dims),
            nn.GELU(),
            nn.Linear(time_dims, time_dims),
        )
        self.time_dims = time_dims

    def forward(self, time_input: torch.Tensor) -> torch.Tensor:
        """time_input [B] (log-SNR or t, any float dtype) -> [B, time_dims] in the parameters' dtype, autocast off."""
        with torch.autocast(time_input.device.type, enabled=False):
            return self.mlp(self.features(time_input))


class TimeFiLM(nn.Module):
    """Per-layer feature-wise modulation by the time embedding: SiLU -> Linear(T, 2C) -> (scale, shift)."""

    def __init__(self, *, time_dims: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dims, 2 * channels))

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        """x [B, Q, C], time_emb [B, T] -> [B, Q, C] (promoted to float32 under autocast)."""
        with torch.autocast(time_emb.device.type, enabled=False):
            scale, shift = self.proj(time_emb)[:, None, :].chunk(2, dim=-1)  # each [B, 1, C]
        return x * (1 + scale) + shift
