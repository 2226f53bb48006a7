"""Noise schedules against their closed forms (Alg. 3, Table 5c) and the forward process."""
from __future__ import annotations

import math

import pytest
import torch

from bev_ddp.diffusion import NoiseSchedule, alpha_sigma, cosine_log_snr, linear_log_snr
from bev_ddp.errors import InputError

TIMES = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]


def closed_form_cosine(t: float, ns: float = 2e-4, ds: float = 2.5e-4) -> float:
    theta = (t + ns) / (1 + ds) * math.pi / 2
    # cos^-2 - 1 = tan^2, clamped at 1e-5 as in Alg. 3
    return -math.log(max(math.tan(theta) ** 2, 1e-5))


@pytest.mark.parametrize("t", TIMES)
def test_cosine_log_snr_matches_closed_form(t):
    got = cosine_log_snr(torch.tensor([t], dtype=torch.float64)).item()
    assert got == pytest.approx(closed_form_cosine(t), rel=1e-9, abs=1e-9)


def test_cosine_endpoints_and_monotonic():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    lsnr = cosine_log_snr(t)
    assert lsnr[0].item() == pytest.approx(-math.log(1e-5))  # clamped near t = 0
    assert lsnr[-1].item() < -18  # almost pure noise at t = 1
    assert bool((lsnr[1:] < lsnr[:-1]).all())


@pytest.mark.parametrize("t", [0.1, 0.3, 0.6, 0.9])
def test_alpha_is_cosine_of_angle(t):
    """Unclamped, sigmoid(log_snr) = cos^2 so alpha = cos(theta), sigma = sin(theta)."""
    alpha, sigma = alpha_sigma(cosine_log_snr(torch.tensor([t], dtype=torch.float64)))
    theta = (t + 2e-4) / (1 + 2.5e-4) * math.pi / 2
    assert alpha.item() == pytest.approx(math.cos(theta), rel=1e-9)
    assert sigma.item() == pytest.approx(math.sin(theta), rel=1e-9)


def test_alpha_sigma_is_variance_preserving():
    lsnr = torch.linspace(-20, 12, 50, dtype=torch.float64)
    alpha, sigma = alpha_sigma(lsnr)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(lsnr))
    torch.testing.assert_close(torch.log(alpha**2 / sigma**2), lsnr)


@pytest.mark.parametrize("t", [0.02, 0.1, 0.3, 0.5, 0.8, 1.0])
def test_linear_log_snr_is_limit_of_discrete_linear_betas(t):
    """-log alpha_bar of 1000 linear betas 1e-4..2e-2 after round(t * 1000) steps.

    The continuous limit drops the O(beta^2) terms of log(1 - beta): within 1.5 % (+ 1e-3).
    """
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64)
    discrete = -torch.log(torch.cumprod(1 - betas, 0)[round(t * 1000) - 1]).item()
    alpha, _ = alpha_sigma(linear_log_snr(torch.tensor([t], dtype=torch.float64)))
    assert -2 * torch.log(alpha).item() == pytest.approx(discrete, rel=0.015, abs=1e-3)


def test_linear_closed_form_and_monotonic():
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    expected = -torch.log(torch.expm1(0.1 * t + 9.95 * t**2))
    torch.testing.assert_close(linear_log_snr(t), expected)
    lsnr = linear_log_snr(torch.linspace(0, 1, 101, dtype=torch.float64))
    assert bool((lsnr[1:] <= lsnr[:-1]).all()) and lsnr[-1] < lsnr[50] < lsnr[0]


def test_schedule_rejects_bad_time():
    with pytest.raises(InputError, match="NaN"):
        cosine_log_snr(float("nan"))  # a host value is checked for free
    # a tensor's values are not read back (that would sync every sampling step): NaN propagates
    assert cosine_log_snr(torch.tensor([0.5, float("nan")])).isnan().tolist() == [False, True]
    with pytest.raises(InputError, match="floating"):
        cosine_log_snr(torch.tensor([1, 0]))


def test_noise_schedule_q_sample():
    schedule = NoiseSchedule(name="cosine")
    x0 = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    x_t = schedule.q_sample(x0, t, noise)
    for i in range(3):
        alpha, sigma = alpha_sigma(cosine_log_snr(t[i]))
        torch.testing.assert_close(x_t[i], alpha * x0[i] + sigma * noise[i])
    with pytest.raises(InputError, match="noise shape"):
        schedule.q_sample(x0, t, noise[:, :2])
    with pytest.raises(InputError, match="t must have shape"):
        schedule.q_sample(x0, t[:2], noise)


def test_noise_schedule_settings_and_times():
    with pytest.raises(InputError, match="unknown"):
        NoiseSchedule(name="sqrt")
    schedule = NoiseSchedule(name="linear", t_max=0.999)
    t1 = schedule.sample_times(1000, generator=torch.Generator().manual_seed(3))
    t2 = schedule.sample_times(1000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2)
    assert 0 <= t1.min() and t1.max() < 0.999 and t1.std() > 0.2
    torch.testing.assert_close(schedule.log_snr(t1), linear_log_snr(t1))
