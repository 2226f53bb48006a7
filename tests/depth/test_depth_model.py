"""DDP depth estimator: SigLoss, ReLU + min_depth output, encoding, flip TTA, inference contract."""
from __future__ import annotations

import math

import pytest
import torch

from bev_ddp.depth.build import build_depth_model
from bev_ddp.depth.encoding import ReLUDepthEncoder
from bev_ddp.depth.losses import SigLoss, depth_from_logits
from bev_ddp.depth.model import DepthPrediction
from bev_ddp.errors import ConfigError, InputError
from depth_helpers import depth_batch, depth_cfg

H, W = 64, 96


def _model(*overrides: str):
    torch.manual_seed(0)
    return build_depth_model(depth_cfg("synth_tiny.yaml", *overrides))


def test_sigloss_hand_computed_on_valid_pixels():
    loss = SigLoss(min_depth=0.0, max_depth=10.0, eps=0.0)
    target = torch.tensor([[[[1.0, 2.0, 0.0, 20.0]]]])  # 0 invalid, 20 > max_depth ignored
    logits = torch.tensor([[[[2.0, 2.0, 5.0, 5.0]]]])  # depth = relu(logits) + 0
    g = torch.tensor([math.log(2.0), 0.0])
    expected = math.sqrt(float(g.var()) + 0.15 * float(g.mean()) ** 2)
    assert float(loss(logits, target)) == pytest.approx(expected, rel=1e-6)
    # scale-invariant part: a global factor only moves the mean term
    assert float(SigLoss(min_depth=0.0, max_depth=10.0, eps=0.0, variance_focus=0.0)(logits * 3, target)) == \
        pytest.approx(float(g.std()), rel=1e-5)
    empty = loss(logits.requires_grad_(), torch.zeros_like(target))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_relu_output_and_encoder_round_trip():
    assert torch.equal(depth_from_logits(torch.tensor([-3.0, 0.0, 2.5]), 0.5), torch.tensor([0.5, 0.5, 3.0]))
    enc = ReLUDepthEncoder(min_value=1.0, max_value=9.0, scale=0.1, num_bins=8)
    logits = torch.tensor([[[[-1.0, 1.0, 3.0, 100.0]]]])  # depth 1, 2, 4, 101 (clamped to 9)
    assert torch.allclose(enc.decode(logits), torch.tensor([[[[1.0, 2.0, 4.0, 101.0]]]]))
    # encode_prediction == encode(decode(.)) with depth normalised over [1, 9]
    expected = torch.tensor([[[[-1.0, -0.75, -0.25, 1.0]]]]) * 0.1
    assert torch.allclose(enc.encode_prediction(logits), expected)
    assert torch.allclose(enc.encode(enc.decode(logits).clamp(max=9.0)), expected)
    # log bins over [1, 9]: log(d) / log(9) * 8 -> 0, 2.52, 5.05, 8 (clamped to 7)
    assert enc.discretize(logits).flatten().tolist() == [0, 2, 5, 7]


def test_mask_aware_downsampling_never_blends_invalid_zeros():
    enc = ReLUDepthEncoder(min_value=1.0, max_value=9.0, scale=0.1)
    target = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]]])  # one valid pixel in a 2x2 cell
    encoded = enc.encode(target, (1, 1))
    assert torch.allclose(encoded, torch.tensor([[[[((4.0 - 1) / 8 * 2 - 1) * 0.1]]]]))
    with pytest.raises(InputError, match="min_value"):
        ReLUDepthEncoder(min_value=0.0, max_value=9.0)


def test_losses_gradients_and_self_aligned():
    model = _model()
    _, losses = model(depth_batch())
    assert set(losses) == {"loss_ddp"} and torch.isfinite(losses["loss_ddp"])
    losses["loss_ddp"].backward()
    for part in (model.encoder, model.head.decoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    aligned = model(depth_batch(), self_aligned=True)[1]["loss_ddp"]
    assert torch.isfinite(aligned)


def test_output_starts_at_init_depth():
    model = _model("model.init_depth=12.0", "model.flip_tta=false").eval()
    preds = model.predict({"img": depth_batch(1)["img"]}, steps=[1])
    median = float(preds[1].depth.median())
    assert 6.0 < median < 24.0  # the untrained net predicts around the initial 12 m, never below min_depth
    assert float(preds[1].depth.min()) >= 1e-3
    with pytest.raises(ConfigError, match="init_depth"):
        _model("model.init_depth=100.0")


def test_predict_contract_seed_and_size():
    model = _model().eval()
    batch = depth_batch()
    preds = model.predict({"img": batch["img"], "ori_size": torch.tensor([[H, W], [H, W]])}, steps=[1, 3], seed=0)
    for p in preds.values():
        assert isinstance(p, DepthPrediction)
        assert p.depth.shape == (2, 1, H, W) and p.uncertainty.shape == (2, H, W)
        assert ((p.uncertainty >= 0) & (p.uncertainty <= 1)).all()
    again = model.predict({"img": batch["img"]}, steps=[3], seed=0)
    assert torch.equal(again[3].depth, preds[3].depth)
    big = model.predict({"img": batch["img"][:1], "ori_size": torch.tensor([[2 * H, 2 * W]])}, steps=[1])
    assert big[1].depth.shape == (1, 1, 2 * H, 2 * W)


def test_flip_tta_averages_the_flipped_prediction():
    tta = _model("model.flip_tta=true").eval()
    plain = _model("model.flip_tta=false").eval()
    img = depth_batch(1)["img"]
    a = plain.predict({"img": img}, steps=[2], seed=0)[2].depth
    b = plain.predict({"img": img.flip(-1)}, steps=[2], seed=0)[2].depth.flip(-1)
    both = tta.predict({"img": img}, steps=[2], seed=0)[2].depth
    assert torch.allclose(both, (a + b) / 2, atol=1e-5)
    assert not torch.allclose(both, a, atol=1e-4)


def test_bad_input():
    model = _model()
    with pytest.raises(InputError, match="gt_depth"):
        model({"img": torch.zeros(1, 3, H, W), "gt_depth": torch.zeros(1, H, W)})
    bad = depth_batch(1)
    bad["gt_depth"][0, 0, -1, -1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        model(bad)
    with pytest.raises(ConfigError, match="min_depth"):
        _model("model.min_depth=0")


def test_parameter_count_at_swin_t():
    torch.manual_seed(0)
    model = build_depth_model(depth_cfg("kitti_swin_t.yaml"))
    total = sum(p.numel() for p in model.parameters())
    print(f"depth Swin-T: {total / 1e6:.2f}M")
    assert 37.5e6 < total < 40.5e6  # seg model minus the 150-class parts and the auxiliary head
