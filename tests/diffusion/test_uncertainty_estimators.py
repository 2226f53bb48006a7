"""Uncertainty estimators over K noise draws x S steps, against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from bev_ddp.diffusion.uncertainty import (
    binary_entropy,
    draw_disagreement,
    draw_variance,
    entropy_of_mean,
    error_probability,
    multilabel_estimators,
    mutual_information,
    per_class_change_count,
    pixel_any,
    pixel_max,
)
from bev_ddp.errors import InputError


def _h(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_binary_entropy_bounds_and_values():
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    h = binary_entropy(p)
    torch.testing.assert_close(h, torch.tensor([_h(v) for v in p.tolist()]))
    assert h[2] == pytest.approx(1.0) and h[0] == 0 and h[4] == 0  # max 1 bit at 0.5, 0 at certainty
    g = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert bool(((binary_entropy(g) >= 0) & (binary_entropy(g) <= 1)).all())
    torch.testing.assert_close(binary_entropy(g), binary_entropy(1 - g))  # symmetric


def test_mutual_information_hand_case_and_zero_when_draws_agree():
    # two draws: one confident positive (0.9), one confident negative (0.1) -> p̄ = 0.5
    draws = torch.tensor([[0.9, 0.3], [0.1, 0.3]])  # [D=2, cells=2]
    mi = mutual_information(draws)
    assert mi[0].item() == pytest.approx(1.0 - _h(0.9), abs=1e-6)  # H(0.5) - (H(.9)+H(.1))/2
    assert mi[1].item() == pytest.approx(0.0, abs=1e-7)  # identical draws carry no draw uncertainty
    assert entropy_of_mean(draws)[1].item() == pytest.approx(_h(0.3), abs=1e-6)  # but the entropy is high
    g = torch.Generator().manual_seed(1)
    rand = torch.rand(4, 3, 5, 5, generator=g)
    mi = mutual_information(rand)
    assert bool((mi >= 0).all()) and bool((mi <= entropy_of_mean(rand) + 1e-6).all())
    assert torch.equal(mutual_information(rand[:1]), torch.zeros(3, 5, 5))  # one draw: MI = 0


def test_variance_and_disagreement():
    draws = torch.tensor([[1.0, 0.6, 0.7, 0.2], [0.0, 0.6, 0.4, 0.3], [1.0, 0.6, 0.8, 0.1], [0.0, 0.6, 0.2, 0.4]])
    var = draw_variance(draws)
    assert var[0].item() == pytest.approx(1.0)  # 0/1 split evenly: variance 0.25 -> scaled to 1
    assert var[1].item() == pytest.approx(0.0)
    dis = draw_disagreement(draws)
    # shares of draws >= 0.5: 2/4, 4/4, 2/4, 0/4
    torch.testing.assert_close(dis, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    three = torch.tensor([[0.9], [0.8], [0.1]])
    assert draw_disagreement(three).item() == pytest.approx(2 / 3)


def test_per_class_change_count_and_pixel_max():
    steps = [torch.tensor([[[[0.9, 0.1]], [[0.2, 0.2]]]]),   # [B=1, K=2, H=1, W=2]
             torch.tensor([[[[0.4, 0.1]], [[0.7, 0.2]]]]),
             torch.tensor([[[[0.6, 0.1]], [[0.7, 0.2]]]])]
    cc = per_class_change_count(steps)
    # class 0 cell 0 flips twice (on, off, on); class 1 cell 0 once; the rest never: 2 transitions
    torch.testing.assert_close(cc, torch.tensor([[[[1.0, 0.0]], [[0.5, 0.0]]]]))
    torch.testing.assert_close(pixel_max(cc), torch.tensor([[[1.0, 0.0]]]))
    assert torch.equal(per_class_change_count(steps[:1]), torch.zeros(1, 2, 1, 2))


def test_multilabel_estimators_from_draws_and_steps():
    g = torch.Generator().manual_seed(2)
    draws = [[torch.rand(2, 3, 4, 4, generator=g) for _ in range(3)] for _ in range(2)]
    est = multilabel_estimators(draws)
    assert set(est) == {"change_count", "entropy", "error_probability", "mutual_information", "variance", "disagreement"}
    final = torch.stack([d[-1] for d in draws])
    torch.testing.assert_close(est["entropy"], binary_entropy(final.mean(0)))
    torch.testing.assert_close(est["change_count"],
                               (per_class_change_count(draws[0]) + per_class_change_count(draws[1])) / 2)
    for v in est.values():
        assert v.shape == (2, 3, 4, 4) and bool(((v >= 0) & (v <= 1)).all())
    one = multilabel_estimators(draws[:1])
    assert not one["mutual_information"].any() and not one["disagreement"].any()
    with pytest.raises(InputError):
        multilabel_estimators([])
    with pytest.raises(InputError):
        multilabel_estimators([draws[0], draws[1][:2]])


def test_error_probability_and_any_class_combination():
    draws = torch.tensor([[0.9, 0.2], [0.7, 0.4]])  # [D=2, cells=2]: p̄ = 0.8, 0.3
    torch.testing.assert_close(error_probability(draws), torch.tensor([0.2, 0.3]))
    per_class = torch.tensor([[[[0.2]], [[0.5]], [[0.0]]]])  # [B=1, K=3, 1, 1]
    # P(any wrong) = 1 - 0.8 * 0.5 * 1.0 = 0.6 (more than the worst class alone)
    assert pixel_any(per_class).item() == pytest.approx(0.6)
    assert pixel_max(per_class).item() == pytest.approx(0.5)
