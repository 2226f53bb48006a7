"""Checkpoint files (atomic writes, key checks, weight loading reports) and the LR schedule."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from bev_ddp.engine.checkpoint import RNGState, load_checkpoint, load_model_weights, save_atomic
from bev_ddp.engine.lr_schedule import LRFactor
from bev_ddp.errors import ConfigError, InputError


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_atomic({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):
        save_atomic({"a": lambda: None}, path)  # not picklable: fails mid-write
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temporary file left behind


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = RNGState.capture()
    expected = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    save_atomic({"rng": state.to_dict()}, tmp_path / "r.pth")
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    RNGState.from_dict(torch.load(tmp_path / "r.pth", weights_only=True)["rng"]).restore()
    again = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3]


def test_load_checkpoint_rejects_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "none.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {}, "step": 1}, foreign)
    with pytest.raises(InputError, match="lacks the key"):
        load_checkpoint(foreign)


def test_model_weights_report_missing_unexpected_and_mismatched_keys(tmp_path):
    src = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    path = tmp_path / "w.pth"
    torch.save({"model": src.state_dict()}, path)
    same = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    load_model_weights(same, path)
    assert torch.equal(same[1].weight, src[1].weight)
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    with pytest.raises(InputError) as exc:
        load_model_weights(other, path)
    message = str(exc.value)
    assert "missing keys: 3.bias, 3.weight" in message
    assert "shape mismatch keys: 0.bias: checkpoint (4,) vs model (5,)" in message
    bare = tmp_path / "bare.pth"
    torch.save({"0.weight": src[0].weight.detach(), "0.bias": src[0].bias.detach(), "extra": torch.ones(1)}, bare)
    with pytest.raises(InputError, match="unexpected keys: extra"):
        load_model_weights(same, bare)
    load_model_weights(same, bare, strict=False)  # loads what fits
    assert torch.equal(same[0].weight, src[0].weight)


@pytest.mark.parametrize(
    "schedule, it, expected",
    [
        ("constant", 50, 1.0),
        ("cosine", 10, 1.0),  # first step after warm-up
        ("cosine", 55, 0.001 + 0.999 * 0.5),  # half-way through the decay
        ("cosine", 100, 0.001),
        ("poly", 55, 0.5),
        ("poly", 100, 0.001),  # floored at min_lr_ratio
    ],
)
def test_lr_factor_values(schedule, it, expected):
    f = LRFactor(schedule, total_iters=100, warmup_iters=10, min_lr_ratio=1e-3, poly_power=1.0)
    assert f(it) == pytest.approx(expected)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)  # linear warm-up


def test_lr_factor_rejects_bad_settings():
    with pytest.raises(ConfigError, match="optim.schedule"):
        LRFactor("step", total_iters=10)
    with pytest.raises(ConfigError, match="train.iters"):
        LRFactor("cosine", total_iters=0)
    assert math.isclose(LRFactor("cosine", total_iters=10)(0), 1.0)
