"""Label encoders: range, round trips, ignore handling, downsampling, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bev_ddp.diffusion.encoding import AnalogBitsEncoder, ClassEmbeddingEncoder, ContinuousEncoder, OneHotEncoder
from bev_ddp.errors import InputError


def labels(b=2, h=6, w=8, k=5, seed=0):
    return torch.randint(0, k, (b, h, w), generator=torch.Generator().manual_seed(seed))


def logits_for(lab, k):
    """Logits whose argmax is ``lab``."""
    return F.one_hot(lab, k).permute(0, 3, 1, 2).float() * 4 - 2


def test_class_embedding_single_label_values_and_range():
    enc = ClassEmbeddingEncoder(num_classes=5, dims=16, scale=0.01)
    lab = labels()
    x = enc.encode(lab)
    assert x.shape == (2, 16, 6, 8)
    assert x.abs().max() <= 0.01
    expected = (torch.sigmoid(enc.embedding.weight[lab[1, 2, 3]]) * 2 - 1) * 0.01
    torch.testing.assert_close(x[1, :, 2, 3], expected)
    # round trip: encoding the prediction whose argmax is the label equals encoding the label
    torch.testing.assert_close(enc.encode_prediction(logits_for(lab, 5)), x)
    # nearest-row decoding recovers the labels
    table = (torch.sigmoid(enc.embedding.weight[:5]) * 2 - 1) * 0.01  # [K, D]
    dist = ((x.permute(0, 2, 3, 1)[..., None, :] - table) ** 2).sum(-1)
    assert torch.equal(dist.argmin(-1), lab)


def test_class_embedding_ignore_uses_extra_row():
    enc = ClassEmbeddingEncoder(num_classes=3, dims=8, scale=0.02)
    lab = torch.tensor([[[0, 255], [2, 1]]])
    x = enc.encode(lab)
    torch.testing.assert_close(x[0, :, 0, 1], (torch.sigmoid(enc.embedding.weight[3]) * 2 - 1) * 0.02)


def test_class_embedding_multi_label_equals_mean_of_embeddings():
    enc = ClassEmbeddingEncoder(num_classes=6, dims=12, scale=0.01, multi_label=True)
    mask = torch.rand(2, 6, 5, 7, generator=torch.Generator().manual_seed(1)) > 0.5
    idx = mask.long() * torch.arange(1, 7)[None, :, None, None]  # [B, K, H, W] in {0, k+1}
    naive = enc.embedding(idx).mean(1).permute(0, 3, 1, 2)  # [B, D, H, W]
    torch.testing.assert_close(enc.encode(mask), (torch.sigmoid(naive) * 2 - 1) * 0.01)
    torch.testing.assert_close(enc.encode(mask.float()), enc.encode(mask))
    # predictions are thresholded at probability 0.5
    logits = torch.where(mask, 3.0, -3.0)
    assert torch.equal(enc.discretize(logits), mask)
    torch.testing.assert_close(enc.encode_prediction(logits), enc.encode(mask))


def test_embedding_gets_gradients():
    enc = ClassEmbeddingEncoder(num_classes=4, dims=8, multi_label=True)
    enc.encode(torch.ones(1, 4, 3, 3, dtype=torch.bool)).sum().backward()
    assert enc.embedding.weight.grad.abs().sum() > 0


def test_one_hot_round_trip():
    enc = OneHotEncoder(num_classes=5, scale=0.1)
    lab = labels()
    x = enc.encode(lab)
    torch.testing.assert_close(x.unique(), torch.tensor([-0.1, 0.1]))
    assert torch.equal(x.argmax(1), lab)
    ignored = enc.encode(torch.full((1, 2, 2), 255))
    torch.testing.assert_close(ignored, torch.full_like(ignored, -0.1))
    multi = OneHotEncoder(num_classes=3, scale=0.1, multi_label=True)
    mask = torch.tensor([[[[1]], [[0]], [[1]]]], dtype=torch.bool)
    torch.testing.assert_close(multi.encode(mask)[0, :, 0, 0], torch.tensor([0.1, -0.1, 0.1]))


def test_analog_bits_round_trip():
    enc = AnalogBitsEncoder(num_classes=150, scale=0.1)
    assert enc.channels == 8  # ceil(log2(151))
    lab = labels(k=150)
    x = enc.encode(lab)
    assert x.shape == (2, 8, 6, 8)
    torch.testing.assert_close(x.unique(), torch.tensor([-0.1, 0.1]))
    assert torch.equal(enc.decode_bits(x), lab)
    assert torch.equal(enc.decode_bits(enc.encode(torch.full((1, 1, 1), 255))), torch.full((1, 1, 1), 150))
    torch.testing.assert_close(enc.encode_prediction(logits_for(lab, 150)), x)


def test_label_downsampling_is_nearest():
    enc = OneHotEncoder(num_classes=4, scale=1.0)
    coarse = labels(b=1, h=4, w=5, k=4)
    fine = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)  # [1, 16, 20]
    torch.testing.assert_close(enc.encode(fine, size=(4, 5)), enc.encode(coarse))


def test_continuous_encoding_and_prediction_round_trip():
    enc = ContinuousEncoder(min_value=0.0, max_value=80.0, scale=0.1)
    depth = torch.tensor([[[[0.0, 20.0], [40.0, 80.0]]]])
    x = enc.encode(depth)
    torch.testing.assert_close(x, torch.tensor([[[[0.0, -0.05], [0.0, 0.1]]]]))  # invalid -> 0
    logits = torch.logit(torch.tensor([[[[0.25, 0.5], [0.75, 0.9]]]]))
    torch.testing.assert_close(enc.decode(logits), torch.tensor([[[[20.0, 40.0], [60.0, 72.0]]]]))
    torch.testing.assert_close(enc.encode_prediction(logits), enc.encode(enc.decode(logits)))
    bins = enc.discretize(logits)
    assert bins.dtype == torch.long and bins.shape == (1, 1, 2, 2)
    assert bins.flatten().tolist() == [64, 128, 192, 230]


def test_continuous_downsampling_ignores_invalid_pixels():
    enc = ContinuousEncoder(min_value=0.0, max_value=10.0, scale=1.0)
    depth = torch.zeros(1, 1, 4, 4)
    depth[0, 0, 0, 0] = 2.0  # top-left 2x2 cell: one valid pixel of 2 m
    depth[0, 0, 0, 2:] = 4.0  # top-right cell: two valid pixels of 4 m
    depth[0, 0, 2:, 2:] = 6.0  # bottom-right: all four valid at 6 m; bottom-left: none valid
    x = enc.encode(depth, size=(2, 2))
    torch.testing.assert_close(x, torch.tensor([[[[-0.6, -0.2], [0.0, 0.2]]]]))


@pytest.mark.parametrize(
    "encoder, target, match",
    [
        (ClassEmbeddingEncoder(num_classes=3, dims=4), torch.zeros(1, 2, 2), "integer dtype"),
        (ClassEmbeddingEncoder(num_classes=3, dims=4), torch.full((1, 2, 2), 3), "outside classes"),
        (ClassEmbeddingEncoder(num_classes=3, dims=4), torch.full((1, 2, 2), -1), "outside classes"),
        (ClassEmbeddingEncoder(num_classes=3, dims=4), torch.zeros(1, 1, 2, 2, dtype=torch.long), r"\[B, H, W\]"),
        (ClassEmbeddingEncoder(num_classes=3, dims=4, multi_label=True), torch.zeros(1, 2, 2, 2), "multi-label"),
        (OneHotEncoder(num_classes=2, scale=0.1, multi_label=True), torch.full((1, 2, 2, 2), float("nan")), "NaN"),
        (ContinuousEncoder(min_value=0, max_value=1), torch.full((1, 1, 2, 2), float("nan")), "NaN"),
        (ContinuousEncoder(min_value=0, max_value=1), -torch.ones(1, 1, 2, 2), "negative"),
        (ContinuousEncoder(min_value=0, max_value=1), torch.ones(1, 2, 2), r"\[B, 1, H, W\]"),
        (ContinuousEncoder(min_value=0, max_value=1), torch.ones(1, 1, 2, 2, dtype=torch.long), "floating"),
    ],
)
def test_bad_targets_raise_input_error(encoder, target, match):
    with pytest.raises(InputError, match=match):
        encoder.encode(target)


def test_bad_settings_and_logits():
    with pytest.raises(InputError, match="scale"):
        OneHotEncoder(num_classes=3, scale=0.0)
    with pytest.raises(InputError, match="min_value"):
        ContinuousEncoder(min_value=5.0, max_value=1.0)
    with pytest.raises(InputError, match="3 channels"):
        OneHotEncoder(num_classes=3, scale=0.1).discretize(torch.zeros(1, 4, 2, 2))
