"""Continuous-time noise schedules of DDP (paper Alg. 1, Alg. 3; Table 5c).

A schedule maps a time ``t`` in [0, 1] (0 = clean map, 1 = pure noise) to the log signal-to-noise
ratio ``log_snr(t) = log(alpha_t^2 / sigma_t^2)``; the forward process (Eq. 1) is

    x_t = alpha_t * x_0 + sigma_t * eps,   alpha_t = sqrt(sigmoid(log_snr)),
                                           sigma_t = sqrt(sigmoid(-log_snr)),

so ``alpha_t^2 + sigma_t^2 = 1`` (variance preserving).  The decoder is conditioned on ``log_snr``.

Paper symbols -> names here:

=========================  =====================================
paper                      here
=========================  =====================================
t                          ``t`` (float tensor, any shape)
alpha_cumprod(t) (Alg. 3)  ``cosine_log_snr(t)`` (it returns log-SNR)
sqrt(alpha_cumprod)        ``alpha`` from :func:`alpha_sigma`
sqrt(1 - alpha_cumprod)    ``sigma`` from :func:`alpha_sigma`
ns, ds                     ``ns=2e-4``, ``ds=2.5e-4``
eps of ``log(., eps)``     ``clamp_min=1e-5``
=========================  =====================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from bev_ddp.errors import InputError

LOG_CLAMP = 1e-5  # Alg. 3: log(x, eps=1e-5) == log(clamp(x, min=1e-5))


def _check_time(t: torch.Tensor, name: str = "t") -> torch.Tensor:
    """Type check only: a value check here would read ``t`` back every sampling step (NaN propagates)."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=torch.float32)
        if not torch.isfinite(t).all():  # a host value: no device synchronisation
            raise InputError(f"{name} contains NaN or inf")
    if not t.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def cosine_log_snr(t: torch.Tensor, ns: float = 2e-4, ds: float = 2.5e-4) -> torch.Tensor:
    """Cosine schedule of Alg. 3 as log-SNR.

    ``log_snr(t) = -log(max(cos((t + ns) / (1 + ds) * pi/2)^-2 - 1, 1e-5))``.  Equals
    ``log(alpha_bar / (1 - alpha_bar))`` of the cosine schedule (Nichol & Dhariwal 2021) with
    ``alpha_bar = cos^2(...)``; the clamp caps log-SNR at ``-log(1e-5) = 11.51`` near t = 0.

    Args:
        t: time in [0, 1], any shape, floating point.
    Returns:
        log-SNR, same shape and dtype as ``t``; decreasing in t (about -18.9 at t = 1).
    """
    t = _check_time(t)
    n = torch.cos((t + ns) / (1 + ds) * math.pi / 2) ** -2
    return -torch.log(torch.clamp(n - 1, min=LOG_CLAMP))


def linear_log_snr(t: torch.Tensor, beta_start: float = 1e-4, beta_end: float = 2e-2,
                   num_train_steps: int = 1000) -> torch.Tensor:
    """Linear-beta schedule (Ho et al. 2020; the Table 5c ablation) in continuous time.

    The discrete schedule has ``beta_i`` linear from ``beta_start`` to ``beta_end`` over
    ``num_train_steps`` steps.  Its continuous-time limit (the VP-SDE of Song et al. 2021 with
    ``b0 = beta_start * N = 0.1`` and ``b1 = beta_end * N = 20``) is

        alpha_bar(t) = exp(-(b0 * t + (b1 - b0) / 2 * t^2)),
        log_snr(t)   = log(alpha_bar / (1 - alpha_bar)) = -log(expm1(b0 * t + (b1 - b0) / 2 * t^2)),

    clamped like the cosine schedule (``expm1(.) >= 1e-5``).  The authors' code uses the close
    approximation ``-log(expm1(1e-4 + 10 t^2))`` (b0 -> 0, (b1 - b0)/2 -> 10); we keep the exact
    limit of the stated betas.  log-SNR at t = 1 is about -10.0.

    Args:
        t: time in [0, 1], any shape, floating point.
    Returns:
        log-SNR, same shape and dtype as ``t``.
    """
    t = _check_time(t)
    b0 = beta_start * num_train_steps
    b1 = beta_end * num_train_steps
    integral = b0 * t + 0.5 * (b1 - b0) * t**2  # -log(alpha_bar(t))
    return -torch.log(torch.clamp(torch.expm1(integral), min=LOG_CLAMP))


def alpha_sigma(log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise coefficients of the forward process from log-SNR.

    Returns:
        ``(alpha, sigma)`` with ``alpha = sqrt(sigmoid(log_snr))`` and
        ``sigma = sqrt(sigmoid(-log_snr))``, each the shape of ``log_snr``.
    """
    return torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()


# An explicit table of the two schedules of the paper (not a registry: nothing can add to it).
SCHEDULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "cosine": cosine_log_snr,
    "linear": linear_log_snr,
}


def expand_batch_coef(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample coefficient [B] to [B, 1, ..., 1] so it broadcasts against ``x``."""
    return coef.reshape(coef.shape + (1,) * (x.dim() - coef.dim()))


@dataclass(frozen=True)
class NoiseSchedule:
    """Forward (noising) process of DDP: a plain settings object, no weights.

    Attributes:
        name: ``"cosine"`` (default, Alg. 3) or ``"linear"`` (Table 5c ablation).
        t_max: upper end of the training time distribution ``t ~ U(0, t_max)``.
    """

    name: str = "cosine"
    t_max: float = 0.999

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise InputError(f"noise schedule {self.name!r} is unknown; choose from {', '.join(SCHEDULES)}")
        if not 0.0 < self.t_max <= 1.0:
            raise InputError(f"noise schedule t_max must be in (0, 1], got {self.t_max}")

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """log-SNR at time ``t`` (any shape)."""
        return SCHEDULES[self.name](t)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` at time ``t`` (any shape)."""
        return alpha_sigma(self.log_snr(t))

    def sample_times(self, batch_size: int, *, device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Training times ``t ~ U(0, t_max)``, shape [batch_size], float32 on ``device``."""
        gen_device = generator.device if generator is not None else device
        t = torch.rand(batch_size, generator=generator, device=gen_device) * self.t_max
        return t.to(device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Corrupt ``x0`` to time ``t`` (Eq. 1 / Alg. 1): ``alpha_t * x0 + sigma_t * noise``.

        Args:
            x0: [B, C, H, W] encoded clean map.
            t: [B] times in [0, 1].
            noise: standard normal, same shape as ``x0``.
        Returns:
            [B, C, H, W] noisy map ``x_t``.
        """
        if noise.shape != x0.shape:
            raise InputError(f"q_sample noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
        if t.dim() != 1 or t.shape[0] != x0.shape[0]:
            raise InputError(f"q_sample t must have shape [{x0.shape[0]}], got {tuple(t.shape)}")
        alpha, sigma = self.alpha_sigma(t)
        return expand_batch_coef(alpha, x0) * x0 + expand_batch_coef(sigma, x0) * noise
