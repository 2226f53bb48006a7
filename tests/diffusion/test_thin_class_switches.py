"""The thin-class switches: ``target_pooling`` (max) and ``reencode`` (soft) against formulas written here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bev_ddp.diffusion.encoding import AnalogBitsEncoder, ClassEmbeddingEncoder, OneHotEncoder
from bev_ddp.errors import InputError
from bev_ddp.nn import DDPHead, MapDecoder


def line_mask(k=3, size=8, column=2, cls=1):
    """[1, K, size, size] masks: class ``cls`` is one column wide at ``column`` (even: nearest misses it)."""
    m = torch.zeros(1, k, size, size, dtype=torch.bool)
    m[0, cls, :, column] = True
    return m


def test_max_pooling_keeps_a_one_cell_line_that_nearest_drops():
    target = line_mask(column=2)
    nearest = ClassEmbeddingEncoder(num_classes=3, dims=4, multi_label=True).prepare_target(target, (4, 4))
    pooled = ClassEmbeddingEncoder(num_classes=3, dims=4, multi_label=True,
                                   target_pooling="max").prepare_target(target, (4, 4))
    assert not nearest[0, 1].any()  # nearest-exact samples fine columns 1, 3, 5, 7
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:, 1] = True  # fine column 2 lies in coarse column 1
    assert torch.equal(pooled[0, 1], expected)
    assert not pooled[0, 0].any() and not pooled[0, 2].any()
    # an odd column survives nearest too: both poolings agree there
    odd = line_mask(column=3)
    assert torch.equal(ClassEmbeddingEncoder(num_classes=3, dims=4, multi_label=True).prepare_target(odd, (4, 4)),
                       ClassEmbeddingEncoder(num_classes=3, dims=4, multi_label=True,
                                             target_pooling="max").prepare_target(odd, (4, 4)))


def test_max_pooling_is_nearest_at_the_same_size_and_rejects_unknown_names():
    target = line_mask(column=2)
    enc = ClassEmbeddingEncoder(num_classes=3, dims=4, multi_label=True, target_pooling="max")
    assert torch.equal(enc.prepare_target(target), target)
    with pytest.raises(InputError, match="target_pooling"):
        ClassEmbeddingEncoder(num_classes=3, dims=4, multi_label=True, target_pooling="mean")


def test_multi_label_probability_encoding_is_the_expected_code():
    torch.manual_seed(0)
    enc = ClassEmbeddingEncoder(num_classes=3, dims=5, scale=0.1, multi_label=True)
    probs = torch.rand(2, 3, 4, 4)
    got = enc.encode_probabilities(probs)
    table = enc.embedding.weight.detach()
    # per cell: the embedding mixes E[0] ("absent") and E[k+1] with weights 1 - p_k and p_k, mean over k
    mix = sum((1 - probs[:, k, :, :, None]) * table[0] + probs[:, k, :, :, None] * table[k + 1] for k in range(3)) / 3
    expected = ((torch.sigmoid(mix) * 2 - 1) * 0.1).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected)
    masks = probs > 0.5  # on 0/1 masks it is the label encoding
    torch.testing.assert_close(enc.encode_probabilities(masks.float()), enc.encode_labels(masks))


def test_single_label_and_one_hot_probability_encodings_match_labels_on_one_hot_inputs():
    lab = torch.randint(0, 4, (2, 3, 5), generator=torch.Generator().manual_seed(1))
    one_hot = F.one_hot(lab, 4).permute(0, 3, 1, 2).float()
    emb = ClassEmbeddingEncoder(num_classes=4, dims=6, scale=0.01)
    torch.testing.assert_close(emb.encode_probabilities(one_hot), emb.encode_labels(lab))
    hot = OneHotEncoder(num_classes=4, scale=0.1)
    torch.testing.assert_close(hot.encode_probabilities(one_hot), hot.encode_labels(lab))
    with pytest.raises(InputError, match="probability-weighted"):
        AnalogBitsEncoder(num_classes=4).encode_probabilities(one_hot)


def _head(reencode: str, label_encoder=None) -> DDPHead:
    torch.manual_seed(0)
    enc = label_encoder or ClassEmbeddingEncoder(num_classes=3, dims=8, scale=0.1, multi_label=True)
    dec = MapDecoder(cond_channels=4, map_channels=enc.channels, out_channels=3, embed_dims=16, depth=1,
                     num_heads=2, num_points=2, ffn_dims=32)
    return DDPHead(decoder=dec, label_encoder=enc, objective=lambda lo, t: lo.mean(), reencode=reencode)


def test_soft_reencoding_keeps_a_class_held_below_one_half():
    soft, hard = _head("soft"), _head("threshold")
    hard.load_state_dict(soft.state_dict())
    logits = torch.full((1, 3, 4, 4), -4.0)
    logits[:, 1] = -0.4  # p = 0.40: below the threshold
    absent = hard._encode_prediction((4, 4))(torch.full_like(logits, -4.0))
    assert torch.equal(hard._encode_prediction((4, 4))(logits), absent)  # Alg. 3: the class vanishes
    got = soft._encode_prediction((4, 4))(logits)
    torch.testing.assert_close(got, soft.label_encoder.encode_probabilities(torch.sigmoid(logits)))
    assert (got - absent).abs().amin() > 0  # every cell still carries the class's share


def test_soft_reencoding_shrinks_probabilities_by_area_and_feeds_sampling(monkeypatch):
    soft = _head("soft")
    fine = torch.randn(1, 3, 8, 8)
    got = soft._encode_prediction((4, 4))(fine)
    coarse = torch.sigmoid(fine).view(1, 3, 4, 2, 4, 2).mean(dim=(3, 5))  # mean of each 2 x 2 block
    torch.testing.assert_close(got, soft.label_encoder.encode_probabilities(coarse))
    seen = []
    original = soft.sampler.step

    def spy(x_t, x0_hat, t_now, t_next):
        seen.append(x0_hat)
        return original(x_t, x0_hat, t_now, t_next)

    monkeypatch.setattr(soft.sampler, "step", spy)
    cond = torch.randn(1, 4, 4, 4)
    out = soft.predict(cond, steps=2, seed=0)
    torch.testing.assert_close(seen[0], soft.label_encoder.encode_probabilities(torch.sigmoid(out.step_logits[0])))


def test_soft_reencoding_is_used_by_the_self_aligned_phase(monkeypatch):
    soft = _head("soft")
    calls = []
    original = soft.label_encoder.encode_probabilities
    monkeypatch.setattr(soft.label_encoder, "encode_probabilities", lambda p: calls.append(p) or original(p))
    soft.loss(torch.randn(2, 4, 4, 4), line_mask(size=4).expand(2, -1, -1, -1).float(), self_aligned=True,
              generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1 and calls[0].shape == (2, 3, 4, 4)


def test_reencode_rejects_unknown_names_and_analog_bits():
    with pytest.raises(InputError, match="reencode"):
        _head("probabilities")
    with pytest.raises(InputError, match="analog bits"):
        _head("soft", AnalogBitsEncoder(num_classes=3))


def _bev_head(**ddp):
    from omegaconf import OmegaConf

    from bev_ddp.bev.build import build_head
    from bev_ddp.bev.schema import HeadSchema

    cfg = OmegaConf.merge(OmegaConf.structured(HeadSchema), {
        "input_scope": [[-4.0, 4.0, 1.0], [-4.0, 4.0, 1.0]],
        "ddp": {"map_channels": 8, "embed_dims": 16, "depth": 1, "num_heads": 2, "num_points": 2, "ffn_dims": 32, **ddp}})
    torch.manual_seed(0)
    return build_head(cfg, in_channels=12, classes=["a", "b", "c"], xbound=[-4.0, 4.0, 1.0], ybound=[-4.0, 4.0, 1.0])


def test_one_hot_label_encoding_gives_every_class_its_own_channel_of_the_noised_map():
    from bev_ddp.errors import ConfigError

    head = _bev_head(label_encoding="one_hot", map_channels=3, label_scale=0.1)
    enc = head.ddp.label_encoder
    assert isinstance(enc, OneHotEncoder) and enc.channels == 3 and enc.multi_label
    target = line_mask(k=3, size=8, column=3)  # class 1 one column wide
    code = enc.encode_labels(target)  # [1, 3, 8, 8]
    # the line moves its own channel by the full 2 x scale, whatever K is; the class embedding moves by 1/K
    assert torch.equal(code[0, 1, :, 3], torch.full((8,), 0.1)) and torch.equal(code[0, 0], torch.full((8, 8), -0.1))
    head.train()
    _, losses = head(torch.randn(2, 12, 8, 8), line_mask(k=3, size=8, column=3).float().repeat(2, 1, 1, 1))
    sum(losses.values()).backward()  # trains through the 3-channel map
    assert isinstance(_bev_head().ddp.label_encoder, ClassEmbeddingEncoder)  # the default
    with pytest.raises(ConfigError, match=r"model\.head\.ddp\.map_channels must equal the number of classes \(3\)"):
        _bev_head(label_encoding="one_hot", map_channels=8)
    with pytest.raises(ConfigError, match="label_encoding"):
        _bev_head(label_encoding="bits")
