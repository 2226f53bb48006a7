"""Change-count uncertainty map."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.diffusion import change_count_uncertainty
from bev_ddp.errors import InputError


def test_counts_changes_between_consecutive_steps():
    steps = [torch.tensor([[[0, 1, 2, 3]]]), torch.tensor([[[0, 2, 2, 3]]]),
             torch.tensor([[[0, 1, 2, 1]]]), torch.tensor([[[0, 1, 0, 2]]])]
    u = change_count_uncertainty(steps)
    # pixel 0 never changes, pixel 1 changes twice, pixel 2 once, pixel 3 twice; 3 transitions
    torch.testing.assert_close(u, torch.tensor([[[0.0, 2 / 3, 1 / 3, 2 / 3]]]))


def test_multi_channel_pixel_changes_when_any_channel_flips():
    a = torch.zeros(1, 3, 1, 2, dtype=torch.bool)
    b = a.clone()
    b[0, 2, 0, 1] = True
    u = change_count_uncertainty([a, b])
    torch.testing.assert_close(u, torch.tensor([[[0.0, 1.0]]]))


def test_single_step_is_zero_and_range():
    u = change_count_uncertainty([torch.ones(2, 3, 3, dtype=torch.long)])
    assert torch.equal(u, torch.zeros(2, 3, 3))
    g = torch.Generator().manual_seed(0)
    rand = [torch.randint(0, 3, (2, 5, 5), generator=g) for _ in range(5)]
    u = change_count_uncertainty(rand)
    assert u.min() >= 0 and u.max() <= 1 and u.dtype == torch.float32


def test_bad_input():
    with pytest.raises(InputError, match="at least one"):
        change_count_uncertainty([])
    with pytest.raises(InputError, match="shape"):
        change_count_uncertainty([torch.zeros(1, 2, 2), torch.zeros(1, 2, 3)])
