"""DDP head: training loss (plain and self-aligned), sampling, determinism, batching, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bev_ddp.diffusion import NoiseSchedule, cosine_log_snr
from bev_ddp.diffusion.encoding import ClassEmbeddingEncoder, ContinuousEncoder, OneHotEncoder
from bev_ddp.diffusion.sampler import DDIMSampler
from bev_ddp.errors import InputError
from bev_ddp.nn import DDPHead, DDPOutput
from ddp_nn_helpers import ce, tiny_decoder, tiny_seg_head


def cond_and_target(b=2, h=4, w=6, up=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 6, h, w, generator=g), torch.randint(0, 3, (b, h * up, w * up), generator=g)


def test_loss_is_scalar_and_trains_every_part():
    head = tiny_seg_head()
    cond, target = cond_and_target()
    cond.requires_grad_(True)
    losses = head.loss(cond, target, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"loss_ddp"} and losses["loss_ddp"].dim() == 0
    losses["loss_ddp"].backward()
    assert cond.grad.abs().sum() > 0
    assert head.label_encoder.embedding.weight.grad.abs().sum() > 0
    assert head.decoder.time_embedding.features.weights.grad.abs().sum() > 0


def test_objective_gets_logits_at_target_size():
    seen = []

    def objective(logits, target):
        seen.append((tuple(logits.shape), tuple(target.shape)))
        return ce(logits, target)

    head = DDPHead(decoder=tiny_decoder(), label_encoder=ClassEmbeddingEncoder(num_classes=3, dims=8),
                   objective=objective)
    cond, target = cond_and_target(up=4)
    head.loss(cond, target)
    assert seen == [((2, 3, 16, 24), (2, 16, 24))]


def test_loss_is_deterministic_given_generator():
    head = tiny_seg_head()
    cond, target = cond_and_target()
    a = head.loss(cond, target, generator=torch.Generator().manual_seed(5))["loss_ddp"]
    b = head.loss(cond, target, generator=torch.Generator().manual_seed(5))["loss_ddp"]
    c = head.loss(cond, target, generator=torch.Generator().manual_seed(6))["loss_ddp"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def record_decoder_inputs(head):
    seen = []
    head.decoder.register_forward_hook(lambda mod, args, out: seen.append((args[1].clone(), args[2].clone())))
    return seen


def test_self_aligned_noises_the_models_prediction_not_the_ground_truth():
    head = tiny_seg_head().eval()
    cond, target_a = cond_and_target()
    target_b = (target_a + 1) % 3
    seen = record_decoder_inputs(head)
    for target in (target_a, target_b):
        head.loss(cond, target, self_aligned=True, generator=torch.Generator().manual_seed(0))
    # two decoder calls per loss: one from pure noise at t = 1, then on the noised prediction
    assert len(seen) == 4
    torch.testing.assert_close(seen[0][1], cosine_log_snr(torch.ones(2)))
    torch.testing.assert_close(seen[1][0], seen[3][0])  # independent of the ground truth
    seen.clear()
    for target in (target_a, target_b):
        head.loss(cond, target, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2 and not torch.allclose(seen[0][0], seen[1][0])  # plain mode noises the ground truth


def test_self_aligned_trains_decoder_and_embedding():
    head = tiny_seg_head()
    cond, target = cond_and_target()
    head.loss(cond, target, self_aligned=True, generator=torch.Generator().manual_seed(0))["loss_ddp"].backward()
    assert head.label_encoder.embedding.weight.grad.abs().sum() > 0
    assert head.decoder.fuse.weight.grad.abs().sum() > 0


def test_predict_outputs():
    head = tiny_seg_head().eval()
    cond, _ = cond_and_target()
    out = head.predict(cond, steps=3, seed=0)
    assert isinstance(out, DDPOutput)
    assert out.logits.shape == (2, 3, 4, 6) and len(out.step_logits) == 3
    assert torch.equal(out.logits, out.step_logits[-1])
    assert out.uncertainty.shape == (2, 4, 6) and 0 <= out.uncertainty.min() and out.uncertainty.max() <= 1
    big = head.predict(cond, steps=2, seed=0, output_size=(8, 12))
    assert big.logits.shape == (2, 3, 8, 12) and big.uncertainty.shape == (2, 8, 12)
    one = head.predict(cond, steps=1, seed=0)
    assert torch.equal(one.uncertainty, torch.zeros(2, 4, 6))
    assert len(head.predict(cond, steps=np.int64(2), seed=np.int32(0)).step_logits) == 2  # numpy integers work
    assert "schedule='cosine', td=1.0" in repr(head)


def test_one_step_is_a_decoder_call_at_t_1_from_the_seeded_noise():
    head = tiny_seg_head().eval()
    cond, _ = cond_and_target()
    noise = head.initial_noise(cond, seed=3)
    expected = head.decoder(cond, noise, cosine_log_snr(torch.ones(2)))
    torch.testing.assert_close(head.predict(cond, steps=1, seed=3).logits, expected)


def test_uncertainty_matches_changes_of_step_predictions():
    head = tiny_seg_head().eval()
    cond, _ = cond_and_target(h=8, w=8)
    out = head.predict(cond, steps=4, seed=1)
    labels = [x.argmax(1) for x in out.step_logits]
    changes = sum((a != b).float() for a, b in zip(labels[:-1], labels[1:]))
    torch.testing.assert_close(out.uncertainty, changes / 3)


def test_same_seed_same_output_different_seed_different():
    head = tiny_seg_head().eval()
    cond, _ = cond_and_target()
    a = head.predict(cond, steps=3, seed=0)
    b = head.predict(cond, steps=3, seed=0)
    c = head.predict(cond, steps=3, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.step_logits, b.step_logits))
    assert torch.equal(a.uncertainty, b.uncertainty)
    assert not torch.allclose(a.logits, c.logits)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    from_g1 = head.predict(cond, steps=2, generator=g1).logits
    assert torch.equal(from_g1, head.predict(cond, steps=2, generator=g2).logits)


def test_predict_is_predict_many_with_one_count(monkeypatch):
    head = tiny_seg_head().eval()
    cond, _ = cond_and_target()
    for source in ({"seed": [5, 6]}, {"generator": torch.Generator().manual_seed(7)}):
        kwargs = {"seed": None, "generator": None, "output_size": (8, 12), **source}
        many = head.predict_many(cond, steps=[3], **kwargs)[3]
        if "generator" in source:
            kwargs["generator"] = torch.Generator().manual_seed(7)
        one = head.predict(cond, steps=3, **kwargs)
        assert len(one.step_logits) == len(many.step_logits) == 3
        assert all(torch.equal(a, b) for a, b in zip(one.step_logits, many.step_logits))  # bit for bit
        assert torch.equal(one.logits, many.logits) and torch.equal(one.uncertainty, many.uncertainty)
    calls = []
    monkeypatch.setattr(DDPHead, "predict_many", lambda self, cond, **kw: calls.append(kw) or {3: "sampled"})
    assert head.predict(cond, steps=3, seed=1) == "sampled"  # one sampling path, not a copy of it
    assert calls == [{"steps": [3], "seed": 1, "generator": None, "output_size": None}]


def test_batch_equals_per_sample_predictions():
    head = tiny_seg_head().eval()
    cond, _ = cond_and_target(b=3)
    batched = head.predict(cond, steps=3, seed=7)
    for i in range(3):
        single = head.predict(cond[i:i + 1], steps=3, seed=7)
        for s in range(3):
            torch.testing.assert_close(batched.step_logits[s][i:i + 1], single.step_logits[s], rtol=1e-5, atol=1e-5)
        assert torch.equal(batched.uncertainty[i:i + 1], single.uncertainty)
    per_sample = head.predict(cond, steps=2, seed=[3, 4, 5])
    torch.testing.assert_close(per_sample.logits[1:2], head.predict(cond[1:2], steps=2, seed=4).logits,
                               rtol=1e-5, atol=1e-5)


def test_multi_label_and_depth_heads():
    bev = DDPHead(decoder=tiny_decoder(out_channels=4), objective=F.binary_cross_entropy_with_logits,
                  label_encoder=ClassEmbeddingEncoder(num_classes=4, dims=8, multi_label=True))
    cond, _ = cond_and_target()
    mask = torch.rand(2, 4, 8, 12) > 0.5
    assert torch.isfinite(bev.loss(cond, mask.float())["loss_ddp"])
    out = bev.predict(cond, steps=3, seed=0)
    assert out.logits.shape == (2, 4, 4, 6) and out.uncertainty.max() <= 1

    enc = ContinuousEncoder(min_value=0.0, max_value=10.0)
    depth_head = DDPHead(decoder=tiny_decoder(map_channels=1, out_channels=1), label_encoder=enc,
                         objective=lambda logits, d: ((enc.decode(logits) - d).abs() * (d > 0)).mean())
    depth = torch.rand(2, 1, 8, 12) * 10 * (torch.rand(2, 1, 8, 12) > 0.7)
    assert torch.isfinite(depth_head.loss(cond, depth)["loss_ddp"])
    pred = depth_head.predict(cond, steps=2, seed=0)
    assert pred.logits.shape == (2, 1, 4, 6)


@pytest.mark.parametrize("steps", [0, -2, 2.0, True])
def test_bad_steps(steps):
    with pytest.raises(InputError, match="steps"):
        tiny_seg_head().predict(cond_and_target()[0], steps=steps)


def test_bad_condition():
    head = tiny_seg_head()
    cond, target = cond_and_target()
    nan = cond.clone()
    nan[0, 1, 2, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        head.predict(nan, steps=1)
    with pytest.raises(InputError, match="NaN"):
        head.loss(nan, target)
    inf = cond.clone()
    inf[1, 0, 0, 0] = float("inf")
    with pytest.raises(InputError, match="cond contains NaN or inf"):
        head.predict(inf)
    with pytest.raises(InputError, match=r"cond must have shape \[B, 6, H, W\]"):
        head.predict(cond[:, :4])
    with pytest.raises(InputError, match="floating point"):
        head.predict(cond.long())
    with pytest.raises(InputError, match="batch size"):
        head.loss(cond, target[:1])
    with pytest.raises(InputError, match="single-label target"):
        head.loss(cond, target.float())
    with pytest.raises(InputError, match="outside classes"):
        head.loss(cond, target + 5, self_aligned=True)
    with pytest.raises(InputError, match="either seed or generator"):
        head.predict(cond, seed=0, generator=torch.Generator())
    with pytest.raises(InputError, match="one per sample"):
        head.predict(cond, seed=[1, 2, 3])


def test_encoder_decoder_mismatch():
    with pytest.raises(InputError, match="map_channels"):
        DDPHead(decoder=tiny_decoder(), label_encoder=ClassEmbeddingEncoder(num_classes=3, dims=4), objective=ce)
    with pytest.raises(InputError, match="out_channels"):
        DDPHead(decoder=tiny_decoder(map_channels=5), label_encoder=OneHotEncoder(num_classes=5, scale=0.1),
                objective=ce)
    with pytest.raises(InputError, match="unknown"):
        DDPHead(decoder=tiny_decoder(), label_encoder=ClassEmbeddingEncoder(num_classes=3, dims=8), objective=ce,
                sampler=DDIMSampler(schedule=NoiseSchedule(name="quadratic")))
    with pytest.raises(InputError, match="sampler must be a DDIMSampler"):
        DDPHead(decoder=tiny_decoder(), label_encoder=ClassEmbeddingEncoder(num_classes=3, dims=8), objective=ce,
                sampler="ddim")


@pytest.mark.cuda
def test_cuda_predictions_match_cpu():
    """Seeded noise is drawn on the CPU, so a GPU run reproduces the CPU prediction."""
    head = tiny_seg_head().eval()
    cond, target = cond_and_target()
    cpu = head.predict(cond, steps=3, seed=0)
    head = head.to("cuda")
    gpu = head.predict(cond.cuda(), steps=3, seed=0)
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-3, atol=1e-3)
    for generator in (torch.Generator().manual_seed(0), torch.Generator(device="cuda").manual_seed(0)):
        loss = head.loss(cond.cuda(), target.cuda(), self_aligned=True, generator=generator)["loss_ddp"]
        assert loss.device.type == "cuda" and torch.isfinite(loss)


# -- time input: log-SNR (default) or t ---------------------------------------------------------
def time_input_head(time_input: str) -> DDPHead:
    """:func:`tiny_seg_head`'s weights with the given ``time_input``."""
    head = tiny_seg_head()
    return DDPHead(decoder=head.decoder, label_encoder=head.label_encoder, objective=ce, time_input=time_input)


def record_time_inputs(head):
    """The tensors the decoder's time embedding reads, one per decoder call."""
    seen = []
    head.decoder.time_embedding.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    return seen


def test_default_time_input_is_the_log_snr_of_a_direct_decoder_call():
    """Bit for bit what Alg. 1 / Alg. 2 give with the decoder called on ``schedule.log_snr(t)`` directly."""
    head = tiny_seg_head().eval()
    assert head.time_input == "log_snr"
    cond, target = cond_and_target()
    g = torch.Generator().manual_seed(4)
    t = head.schedule.sample_times(2, generator=g)
    x0 = head.label_encoder.encode(target, (4, 6))
    x_t = head.schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    logits = F.interpolate(head.decoder(cond, x_t, cosine_log_snr(t)), size=(8, 12), mode="bilinear",
                           align_corners=False)
    assert torch.equal(head.loss(cond, target, generator=torch.Generator().manual_seed(4))["loss_ddp"],
                       ce(logits, target))

    x, want = head.initial_noise(cond, seed=2), []
    for s, (t_now, t_next) in enumerate(head.sampler.time_pairs(3)):
        want.append(head.decoder(cond, x, cosine_log_snr(torch.full((2,), t_now))))
        if s < 2:
            x = head.sampler.step(x, head.label_encoder.encode_prediction(want[-1]), t_now, t_next).prev_sample
    got = head.predict(cond, steps=3, seed=2).step_logits
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("time_input", ["t", "log_snr"])
def test_time_input_reaches_the_decoder_in_training_self_aligned_and_sampling(time_input, monkeypatch):
    head = time_input_head(time_input).eval()
    to_decoder = (lambda t: t) if time_input == "t" else cosine_log_snr
    cond, target = cond_and_target()
    drawn = []  # the training times the schedule draws
    sample_times = NoiseSchedule.sample_times
    monkeypatch.setattr(NoiseSchedule, "sample_times", lambda *a, **k: drawn.append(sample_times(*a, **k)) or drawn[-1])
    seen = record_time_inputs(head)

    head.loss(cond, target, generator=torch.Generator().manual_seed(0))  # Alg. 1
    assert len(seen) == 1 and torch.equal(seen[0], to_decoder(drawn[0]))
    seen.clear()
    head.loss(cond, target, self_aligned=True, generator=torch.Generator().manual_seed(1))  # Alg. 4
    assert len(seen) == 2 and torch.equal(seen[0], to_decoder(torch.ones(2)))
    assert torch.equal(seen[1], to_decoder(drawn[1]))
    seen.clear()
    head.predict(cond, steps=3, seed=0)  # Alg. 2: t_now = 1, 2/3, 1/3
    want = [to_decoder(torch.full((2,), t_now)) for t_now, _ in head.sampler.time_pairs(3)]
    assert len(seen) == 3 and all(torch.equal(a, b) for a, b in zip(seen, want))
    seen.clear()
    head.predict_many(cond, steps=[1, 3], seed=0)  # one shared call at t = 1
    assert len(seen) == 3 and all(torch.equal(a, b) for a, b in zip(seen, want))


def test_time_input_t_changes_the_prediction_and_bad_values_are_rejected():
    cond, _ = cond_and_target()
    by_t, by_log_snr = (time_input_head(name).eval().predict(cond, steps=1, seed=0).logits for name in ("t", "log_snr"))
    assert not torch.allclose(by_t, by_log_snr)
    assert "time_input='t'" in repr(time_input_head("t"))
    with pytest.raises(InputError, match="time_input must be one of log_snr, t, got 'sigma'"):
        time_input_head("sigma")
