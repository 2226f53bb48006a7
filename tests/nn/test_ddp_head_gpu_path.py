"""DDP head on the GPU path, proven on the CPU: no host read-back while sampling, one shared first
decoder call for several step counts, float32 time / position features under autocast."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.bench.host_sync import HostSyncError, forbid_host_sync
from bev_ddp.diffusion.sampler import DDIMSampler, check_step_counts
from bev_ddp.diffusion.value_checks import value_checks
from bev_ddp.errors import InputError
from bev_ddp.nn.map_decoder import pixel_centres
from bev_ddp.nn.positional_encoding import SinePositionalEncoding
from ddp_nn_helpers import tiny_seg_head


def _cond(b=2, h=4, w=6, seed=0):
    return torch.randn(b, 6, h, w, generator=torch.Generator().manual_seed(seed))


def test_forbid_host_sync_catches_every_read_back():
    x = torch.ones(3)
    for read in (lambda: x.sum().item(), lambda: bool(x.all()), lambda: x.tolist(), lambda: int(x[0]), lambda: float(x[0]),
                 lambda: [0, 1][x[0].long()], lambda: x.nonzero(), lambda: torch.nonzero(x), lambda: x.numpy()):
        with forbid_host_sync(cuda=False), pytest.raises(HostSyncError):
            read()
    assert x.tolist() == [1.0, 1.0, 1.0] and bool(x.all())  # restored afterwards


def test_sampling_loop_reads_nothing_back(monkeypatch):
    """predict / predict_many check their inputs once at the entry; the loop after it never syncs."""
    head = tiny_seg_head().eval()
    cond = _cond()
    want_one = head.predict(cond, steps=3, seed=0)
    want_many = head.predict_many(cond, steps=[1, 3, 5], seed=0)
    calls = []
    sample, sample_many = DDIMSampler.sample, DDIMSampler.sample_many

    def guarded(original):
        def run(self, *args, **kwargs):
            calls.append(original.__name__)
            with forbid_host_sync(cuda=False):
                return original(self, *args, **kwargs)
        return run

    monkeypatch.setattr(DDIMSampler, "sample", guarded(sample))
    monkeypatch.setattr(DDIMSampler, "sample_many", guarded(sample_many))
    got_one = head.predict(cond, steps=3, seed=0)
    got_many = head.predict_many(cond, steps=[1, 3, 5], seed=0)
    assert "sample" in calls and "sample_many" in calls
    torch.testing.assert_close(got_one.logits, want_one.logits, rtol=0, atol=0)
    for n in (1, 3, 5):
        torch.testing.assert_close(got_many[n].logits, want_many[n].logits, rtol=0, atol=0)


def test_the_guard_would_catch_a_value_check_in_the_loop(monkeypatch):
    """Negative control: a value check inside the decoder call fails under the same guard."""
    head = tiny_seg_head().eval()
    forward = type(head.decoder).forward

    def checking_forward(self, cond, x_t, log_snr):
        if not torch.isfinite(log_snr).all():
            raise AssertionError
        return forward(self, cond, x_t, log_snr)

    monkeypatch.setattr(type(head.decoder), "forward", checking_forward)
    with forbid_host_sync(cuda=False), pytest.raises(HostSyncError):
        head.sampler.sample(torch.randn(2, 8, 4, 6), steps=2, denoise=head._denoise(_cond()),
                            encode_prediction=head.label_encoder.encode_prediction)


def test_value_checks_run_at_the_entry_and_can_be_switched_off():
    head = tiny_seg_head().eval()
    bad = _cond()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="cond contains NaN"):
        head.predict(bad, steps=1, seed=0)
    with value_checks(False), forbid_host_sync(cuda=False):  # no read-back at all, entry included
        out = head.predict_many(bad, steps=[1, 2], seed=0)
    assert out[1].logits.isnan().any()


def test_predict_many_shares_the_first_decoder_call():
    head = tiny_seg_head().eval()
    cond = _cond()
    calls = []
    handle = head.decoder.register_forward_hook(lambda mod, args, out: calls.append(out.clone()))
    many = head.predict_many(cond, steps=[1, 3, 5], seed=0)
    assert len(calls) == 1 + 2 + 4  # not 1 + 3 + 5
    for n in (3, 5, 2):
        calls.clear()
        single = head.predict(cond, steps=n, seed=0)
        assert len(calls) == n
        # the 1-step map is the first call of any seeded run, bit for bit
        torch.testing.assert_close(many[1].logits, calls[0], rtol=0, atol=0)
        torch.testing.assert_close(single.step_logits[0], many[1].logits, rtol=0, atol=0)
        if n in many:
            for a, b in zip(many[n].step_logits, single.step_logits):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            torch.testing.assert_close(many[n].uncertainty, single.uncertainty, rtol=0, atol=0)
    handle.remove()
    assert list(many) == [1, 3, 5]


@pytest.mark.parametrize("steps", [0, -1, 2.0, True, [], [1, 0], [3, "5"], None])
def test_step_counts_are_validated_in_one_place(steps):
    with pytest.raises(InputError, match="steps must be integers >= 1"):
        check_step_counts(steps)
    with pytest.raises(InputError, match="steps"):
        tiny_seg_head().predict_many(_cond(), steps=steps if isinstance(steps, list) else [steps])


def test_step_counts_keep_order_and_drop_duplicates():
    assert check_step_counts(5) == [5]
    assert check_step_counts([3, 1, 3]) == [3, 1]


# -- autocast: time, position and reference-point features stay float32 --------------------------
def test_time_embedding_is_float32_under_autocast():
    """CPU autocast bf16 vs fp32: the time embedding is identical (it runs with autocast off)."""
    head = tiny_seg_head().eval()
    log_snr = torch.linspace(-19.0, 11.5, 7)
    want = head.decoder.time_embedding(log_snr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head.decoder.time_embedding(log_snr.to(torch.bfloat16).float())  # a bf16 log-SNR input is exact here
        got_fp32_input = head.decoder.time_embedding(log_snr)
    assert got_fp32_input.dtype == torch.float32
    torch.testing.assert_close(got_fp32_input, want, rtol=0, atol=0)
    # the old path (log-SNR rounded to bf16 before the sines) is off by far more: that is the defect
    assert (got - want).abs().max() > 1e-3


def test_positions_and_reference_points_are_float32():
    enc = SinePositionalEncoding(num_feats=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pos = enc(200, 200)
        ref = pixel_centres(200, 200, "cpu")
    assert pos.dtype == torch.float32 and ref.dtype == torch.float32
    # 200 x 200 centres are 0.0025 apart: bf16 (8 bits) could not even tell neighbours apart
    assert ref[:, 0].unique().numel() == 200


def test_decoder_under_bf16_autocast_stays_close_to_fp32():
    """Whole decoder step, CPU autocast bf16 against fp32: the error is bounded by the bf16 matmuls.

    Measured on this tiny decoder: max abs error of the logits < 0.05 (logits of order 1); the
    FiLM modulation (time embedding + scale/shift, computed in float32) agrees exactly.
    """
    head = tiny_seg_head().eval()
    cond, x_t = _cond(), torch.randn(2, 8, 4, 6, generator=torch.Generator().manual_seed(1))
    log_snr = torch.tensor([-18.9, 3.7])
    want = head.decoder(cond, x_t, log_snr)
    query = torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(2))
    film_want = head.decoder.films[0](query, head.decoder.time_embedding(log_snr))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head.decoder(cond, x_t, log_snr)
        film_got = head.decoder.films[0](query, head.decoder.time_embedding(log_snr))
    torch.testing.assert_close(film_got, film_want, rtol=0, atol=0)
    assert (got.float() - want).abs().max() < 0.05


@pytest.mark.cuda
def test_cuda_sampling_makes_no_device_synchronisation():
    """On a GPU the guard also sets CUDA's sync debug mode to "error" (blocking copies, stream syncs)."""
    head = tiny_seg_head().eval().cuda()
    cond = _cond().cuda()

    def predict():
        return head.predict_many(cond, steps=[1, 3], generator=torch.Generator("cuda").manual_seed(0))

    want = predict()
    with value_checks(False), forbid_host_sync(cuda=True):
        got = predict()
    for n in (1, 3):
        torch.testing.assert_close(got[n].logits, want[n].logits, rtol=0, atol=0)
