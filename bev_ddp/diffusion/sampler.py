"""DDIM sampling with asymmetric time intervals (paper Alg. 2 and Alg. 3; Song et al. 2021).

Paper symbols -> names here:

==============================  ==========================================================
paper                           here
==============================  ==========================================================
steps                           ``steps`` (number of decoder evaluations)
td                              ``td`` (time difference; 1 works best, Sec. 3.4)
map_t                           ``x_t`` [B, C, H, W]
map_pred, encoded (Alg. 3)      ``x0_hat``: the re-encoded discretised prediction
t_now, t_next                   ``t_now``, ``t_next`` ([B] tensors or floats)
sqrt(alpha_cumprod(t))          ``alpha`` (see :mod:`bev_ddp.diffusion.schedule`)
sqrt(1 - alpha_cumprod(t))      ``sigma``
eps                             ``pred_noise``
==============================  ==========================================================

Alg. 3 prints ``sqrt(1 - alpha_now) * eps`` for the noise term of ``map_next``; the DDIM rule
(and the authors' code) uses the *next* noise level, as here: ``x_next = a_next x0 + s_next eps``.

``denoise`` receives the time ``t_now`` [B] in [0, 1] itself; what the decoder is fed (log-SNR or
``t``) is the caller's choice (:class:`bev_ddp.nn.DDPHead`'s ``time_input``).  Every run starts at
``t_now = 1`` from the start map, so the first decoder call is the same for any number of steps:
:meth:`DDIMSampler.sample_many` makes it once for several step counts.
The loop reads nothing back from the device (no ``.item()``, no ``bool(tensor)``): it can run
under CUDA's sync debug mode, ``torch.compile`` or CUDA-graph capture.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from bev_ddp.diffusion.schedule import NoiseSchedule, expand_batch_coef
from bev_ddp.errors import InputError
from bev_ddp.stop import raise_if_stop_requested


@dataclass
class DDIMStepOutput:
    """Result of one DDIM update.

    Attributes:
        prev_sample: [B, C, H, W] ``x_{t_next}``, the map handed to the next decoder call.
        pred_noise: [B, C, H, W] noise implied by ``x_t`` and ``x0_hat``.
        pred_original: [B, C, H, W] the ``x0_hat`` the update used.
    """

    prev_sample: torch.Tensor
    pred_noise: torch.Tensor
    pred_original: torch.Tensor


@dataclass
class DDIMSampleOutput:
    """Result of a full sampling loop.

    Attributes:
        step_predictions: one decoder output per step (``steps`` tensors, e.g. [B, K, H, W] logits),
            in sampling order; the last one is the final prediction.
        times: the ``(t_now, t_next)`` pair of each step.
    """

    step_predictions: list[torch.Tensor] = field(default_factory=list)
    times: list[tuple[float, float]] = field(default_factory=list)


def check_step_counts(steps: int | Sequence[int]) -> list[int]:
    """The one validation of sampling step counts: an int >= 1, or a non-empty sequence of them.

    Returns:
        the step counts as a list of ints, in the given order, duplicates removed.
    """
    counts = [steps] if isinstance(steps, numbers.Integral) or not isinstance(steps, Sequence) else list(steps)
    if not counts or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in counts):
        raise InputError(f"sampling steps must be integers >= 1, got {steps!r}")
    return list(dict.fromkeys(int(s) for s in counts))


def _as_batch_time(t: torch.Tensor | float, x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        return torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device)
    if t.dim() == 0:
        return t.expand(x.shape[0]).to(x.device)
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise InputError(f"DDIM {name} must be a float or a [{x.shape[0]}] tensor, got shape {tuple(t.shape)}")
    return t.to(x.device)


class DDIMSampler:
    """Deterministic DDIM sampler of DDP (eta = 0) with asymmetric time intervals.

    A plain object holding only settings; it owns the sampling loop while the decoder's forward
    is one denoising step, so BEV, image segmentation and depth share it.

    Args:
        schedule: the noise schedule used in training (default cosine).
        td: time difference of Alg. 2 (``td >= 0``).
    """

    def __init__(self, *, schedule: NoiseSchedule | None = None, td: float = 1.0) -> None:
        if td < 0:
            raise InputError(f"DDIMSampler td must be >= 0, got {td}")
        self.schedule = schedule if schedule is not None else NoiseSchedule()
        self.td = float(td)

    def __repr__(self) -> str:
        return f"DDIMSampler(schedule={self.schedule!r}, td={self.td})"

    def time_pairs(self, steps: int) -> list[tuple[float, float]]:
        """Alg. 2: ``t_now = 1 - s/steps``, ``t_next = max(1 - (s + 1 + td)/steps, 0)``."""
        if isinstance(steps, Sequence):
            raise InputError(f"sampling steps must be one integer >= 1 here, got {steps!r}")
        (steps,) = check_step_counts(steps)
        return [(1.0 - s / steps, max(1.0 - (s + 1 + self.td) / steps, 0.0)) for s in range(steps)]

    def step(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t_now: torch.Tensor | float,
             t_next: torch.Tensor | float) -> DDIMStepOutput:
        """One DDIM update from ``t_now`` to ``t_next`` (Alg. 3).

        Args:
            x_t: [B, C, H, W] current noisy map.
            x0_hat: [B, C, H, W] encoded estimate of the clean map.
            t_now, t_next: floats or [B] tensors of times in [0, 1].
        Returns:
            :class:`DDIMStepOutput` with ``prev_sample = alpha_next * x0_hat + sigma_next * eps``.
        """
        if x0_hat.shape != x_t.shape:
            raise InputError(f"DDIM x0_hat shape {tuple(x0_hat.shape)} differs from x_t shape {tuple(x_t.shape)}")
        t_now = _as_batch_time(t_now, x_t, "t_now")
        t_next = _as_batch_time(t_next, x_t, "t_next")
        alpha_now, sigma_now = self.schedule.alpha_sigma(t_now)
        alpha_next, sigma_next = self.schedule.alpha_sigma(t_next)
        # 1. noise implied by the current map and the predicted clean map
        eps = (x_t - expand_batch_coef(alpha_now, x_t) * x0_hat) / expand_batch_coef(sigma_now, x_t)
        # 2. move the predicted clean map to the next noise level along the same noise
        x_next = expand_batch_coef(alpha_next, x_t) * x0_hat + expand_batch_coef(sigma_next, x_t) * eps
        return DDIMStepOutput(prev_sample=x_next, pred_noise=eps, pred_original=x0_hat)

    def sample(self, noise: torch.Tensor, *, steps: int,
               denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               encode_prediction: Callable[[torch.Tensor], torch.Tensor],
               first_prediction: torch.Tensor | None = None) -> DDIMSampleOutput:
        """Run Alg. 2 from ``noise``.

        Args:
            noise: [B, C, H, W] start map ``x_1 ~ N(0, I)``.
            steps: number of decoder calls (>= 1).
            denoise: ``(x_t [B,C,H,W], t [B]) -> prediction`` (one decoder step); ``t`` is the
                time ``t_now`` in [0, 1] (1 = pure noise), float32 on ``noise``'s device.
            encode_prediction: ``prediction -> x0_hat [B,C,H,W]`` (discretise + encode).
            first_prediction: ``denoise(noise, t = 1)`` when already known (it is the same
                for every step count); the first decoder call is then skipped.
        Returns:
            :class:`DDIMSampleOutput` with every step's prediction.  The DDIM update after the
            last decoder call is skipped: it cannot change the returned predictions.
        """
        pairs = self.time_pairs(steps)
        out = DDIMSampleOutput()
        x_t = noise
        for s, (t_now, t_next) in enumerate(pairs):
            t_now_b = _as_batch_time(t_now, x_t, "t_now")
            if s == 0 and first_prediction is not None:
                prediction = first_prediction
            else:
                raise_if_stop_requested()  # a SIGINT/SIGTERM during eval/replay: stop between steps
                prediction = denoise(x_t, t_now_b)
            out.step_predictions.append(prediction)
            out.times.append((t_now, t_next))
            if s + 1 < len(pairs):
                x0_hat = encode_prediction(prediction)
                x_t = self.step(x_t, x0_hat, t_now_b, t_next).prev_sample
        return out

    def sample_many(self, noise: torch.Tensor, *, steps: Sequence[int],
                    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    encode_prediction: Callable[[torch.Tensor], torch.Tensor]) -> dict[int, DDIMSampleOutput]:
        """One run per step count from the same ``noise``, sharing the first decoder call.

        Every run's first call is ``denoise(noise, t = 1)``; it is made once, so
        ``steps = [1, 3, 5]`` costs 1 + 2 + 4 = 7 decoder calls instead of 9.

        Returns:
            ``{step count: DDIMSampleOutput}`` in the order of ``steps`` (duplicates removed).
        """
        counts = list(dict.fromkeys(steps))  # each count is checked by time_pairs
        first = denoise(noise, _as_batch_time(1.0, noise, "t_now"))
        return {n: self.sample(noise, steps=n, denoise=denoise, encode_prediction=encode_prediction,
                               first_prediction=first) for n in counts}
