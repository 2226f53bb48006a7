"""DDIM sampler: Alg. 2 time pairs and the DDIM step algebra (Alg. 3)."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.diffusion import DDIMSampler, NoiseSchedule, alpha_sigma, cosine_log_snr
from bev_ddp.errors import InputError


def test_time_pairs_follow_algorithm_2():
    assert DDIMSampler(td=1).time_pairs(1) == [(1.0, 0.0)]
    pairs = DDIMSampler(td=1).time_pairs(3)
    expected = [(1.0, 1 / 3), (2 / 3, 0.0), (1 / 3, 0.0)]
    for (a, b), (c, d) in zip(pairs, expected):
        assert a == pytest.approx(c) and b == pytest.approx(d)
    pairs = DDIMSampler(td=0).time_pairs(4)  # symmetric intervals
    assert [p[1] for p in pairs] == pytest.approx([0.75, 0.5, 0.25, 0.0])


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_steps(steps):
    with pytest.raises(InputError, match="steps"):
        DDIMSampler().time_pairs(steps)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_perfect_prediction_lands_on_forward_process(name):
    """With x0_hat = x0, x_t = a_now x0 + s_now eps goes exactly to a_next x0 + s_next eps."""
    schedule = NoiseSchedule(name=name)
    sampler = DDIMSampler(schedule=schedule)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 5, 6, 7, generator=g, dtype=torch.float64) * 0.1
    eps = torch.randn(3, 5, 6, 7, generator=g, dtype=torch.float64)
    t_now = torch.tensor([1.0, 0.6, 0.3], dtype=torch.float64)
    t_next = torch.tensor([0.4, 0.2, 0.0], dtype=torch.float64)
    x_t = schedule.q_sample(x0, t_now, eps)
    out = sampler.step(x_t, x0, t_now, t_next)
    torch.testing.assert_close(out.pred_noise, eps)
    torch.testing.assert_close(out.prev_sample, schedule.q_sample(x0, t_next, eps))
    # deterministic (eta = 0) DDIM: the noisy map's mean part a_next * x0 is hit exactly and the
    # noise part keeps the same direction eps, scaled from s_now to s_next
    a_next, s_next = schedule.alpha_sigma(t_next)
    torch.testing.assert_close(out.prev_sample - s_next[:, None, None, None] * eps, a_next[:, None, None, None] * x0)


def test_step_accepts_float_times_and_checks_shapes():
    sampler = DDIMSampler()
    x = torch.randn(2, 3, 4, 4)
    a = sampler.step(x, torch.zeros_like(x), 0.5, 0.25).prev_sample
    b = sampler.step(x, torch.zeros_like(x), torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.25])).prev_sample
    torch.testing.assert_close(a, b)
    _, s_now = alpha_sigma(cosine_log_snr(torch.tensor(0.5)))
    _, s_next = alpha_sigma(cosine_log_snr(torch.tensor(0.25)))
    torch.testing.assert_close(a, x * s_next / s_now)  # x0_hat = 0 rescales the noise
    with pytest.raises(InputError, match="x0_hat shape"):
        sampler.step(x, x[:, :2], 0.5, 0.25)
    with pytest.raises(InputError, match="t_now"):
        sampler.step(x, x, torch.tensor([0.5, 0.5, 0.5]), 0.25)


def test_sample_loop_calls_decoder_per_step_and_feeds_ddim_update():
    sampler = DDIMSampler(td=1)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    seen_x, seen_t, encoded = [], [], []

    def denoise(x_t, t):
        seen_x.append(x_t.clone())
        seen_t.append(t.clone())
        return x_t * 0.5 + 1.0  # any deterministic "prediction"

    def encode(pred):
        encoded.append(pred)
        return torch.tanh(pred) * 0.1

    out = sampler.sample(noise, steps=3, denoise=denoise, encode_prediction=encode)
    assert len(out.step_predictions) == 3 and len(encoded) == 2  # no update after the last call
    pairs = sampler.time_pairs(3)
    for (t_now, _), t in zip(pairs, seen_t):  # denoise gets the time t itself, [B] float32
        assert t.dtype == torch.float32 and torch.equal(t, torch.full((2,), t_now))
    assert torch.equal(seen_x[0], noise)
    for s in range(2):
        expected = sampler.step(seen_x[s], torch.tanh(out.step_predictions[s]) * 0.1, *pairs[s]).prev_sample
        torch.testing.assert_close(seen_x[s + 1], expected)
    assert out.times == pairs


def test_sample_many_shares_the_first_call_at_t_1():
    sampler = DDIMSampler(td=1)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    seen_t = []

    def denoise(x_t, t):
        seen_t.append(t.clone())
        return x_t * 0.5 + 1.0

    runs = sampler.sample_many(noise, steps=[1, 3], denoise=denoise, encode_prediction=lambda p: torch.tanh(p) * 0.1)
    assert len(seen_t) == 1 + 2  # one shared first call, then steps 2 and 3 of the 3-step run
    assert torch.equal(seen_t[0], torch.ones(2))
    want = [torch.full((2,), t_now) for t_now, _ in sampler.time_pairs(3)[1:]]
    assert all(torch.equal(a, b) for a, b in zip(seen_t[1:], want))
    assert torch.equal(runs[1].step_predictions[0], runs[3].step_predictions[0])
