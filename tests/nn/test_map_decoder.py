"""Map decoder: shapes, time conditioning reaching every layer, batch independence, bad input."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.errors import InputError
from bev_ddp.nn import SinePositionalEncoding
from ddp_nn_helpers import tiny_decoder


def inputs(b=2, h=5, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 6, h, w, generator=g), torch.randn(b, 8, h, w, generator=g), torch.randn(b, generator=g)


def test_output_shape_non_square():
    cond, x_t, lsnr = inputs()
    assert tiny_decoder()(cond, x_t, lsnr).shape == (2, 3, 5, 7)


def test_log_snr_changes_output():
    decoder = tiny_decoder().eval()
    cond, x_t, _ = inputs()
    a = decoder(cond, x_t, torch.tensor([-5.0, -5.0]))
    b = decoder(cond, x_t, torch.tensor([5.0, 5.0]))
    assert (a - b).abs().mean() > 1e-2 * a.abs().mean()


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_time_embedding_reaches_every_layer(layer):
    """Guard against time being computed but never used by the layers."""
    decoder = tiny_decoder(depth=3).eval()
    cond, x_t, lsnr = inputs()
    before = decoder(cond, x_t, lsnr)
    with torch.no_grad():
        decoder.films[layer].proj[1].weight.mul_(3.0)
    assert not torch.allclose(decoder(cond, x_t, lsnr), before, atol=1e-5)


def test_gradients_reach_time_embedding_and_films():
    decoder = tiny_decoder(depth=2)
    cond, x_t, lsnr = inputs()
    decoder(cond, x_t, lsnr).square().mean().backward()
    modules = [decoder.time_embedding, *decoder.films, decoder.fuse, *decoder.layers]
    for m in modules:
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_batch_equals_per_sample():
    decoder = tiny_decoder().eval()
    cond, x_t, lsnr = inputs(b=3)
    batched = decoder(cond, x_t, lsnr)
    single = torch.cat([decoder(cond[i:i + 1], x_t[i:i + 1], lsnr[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_sine_positional_encoding():
    enc = SinePositionalEncoding(num_feats=4)
    pos = enc(2, 3)
    assert pos.shape == (6, 8)
    assert pos.unique(dim=0).shape[0] == 6  # every pixel distinct
    torch.testing.assert_close(pos[0, :4], pos[2, :4])  # same row -> same y part
    torch.testing.assert_close(pos[0, 4:], pos[3, 4:])  # same column -> same x part


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda c, x, t: (c[:, :5], x, t), "cond must have shape"),
        (lambda c, x, t: (c, x[:, :4], t), "x_t must have shape"),
        (lambda c, x, t: (c, x[..., :3], t), "must match cond"),
        (lambda c, x, t: (c.long(), x, t), "floating point"),
        (lambda c, x, t: (c, x, t[:1]), "time_input"),
        (lambda c, x, t: (c, x, t.long()), "time_input"),
        (lambda c, x, t: (c[0], x, t), "cond must have shape"),
    ],
)
def test_bad_inputs(mutate, match):
    with pytest.raises(InputError, match=match):
        tiny_decoder()(*mutate(*inputs()))


def test_bad_settings():
    with pytest.raises(InputError, match="depth"):
        tiny_decoder(depth=0)
