"""LR factors: the default style is unchanged; the mmcv style matches mmcv 1.x's LrUpdaterHook.

The oracle below is mmcv 1.x's rule written out by hand (``mmcv/runner/hooks/lr_updater.py``,
``warmup='linear'``, ``by_epoch=False``; ``runner.iter`` 0-based, read before each step): the regular
LR over the whole run, poly ``(base - min_lr)(1 - it/max_iters)^power + min_lr``, cosine
``min_lr + (base - min_lr)(1 + cos(pi it/max_iters))/2``; while ``it < warmup_iters`` it is
multiplied by ``1 - (1 - it/warmup_iters)(1 - warmup_ratio)``.
"""
from __future__ import annotations

import json
import math

import pytest

from bev_ddp.engine.lr_schedule import LRFactor
from bev_ddp.engine.trainer import train
from bev_ddp.errors import ConfigError
from engine_toy_task import TASK, toy_config

BASE_LR = 6e-5


def mmcv_lr(policy: str, it: int, max_iters: int, warmup_iters: int, warmup_ratio: float,
            min_lr: float, power: float = 1.0) -> float:
    """mmcv 1.x's LR at 0-based iteration ``it`` (absolute, for ``BASE_LR``)."""
    if policy == "poly":
        regular = (BASE_LR - min_lr) * (1 - it / max_iters) ** power + min_lr
    else:  # CosineAnnealing
        regular = min_lr + (BASE_LR - min_lr) * (1 + math.cos(math.pi * it / max_iters)) / 2
    if it < warmup_iters:
        return regular * (1 - (1 - it / warmup_iters) * (1 - warmup_ratio))
    return regular


def old_factor(schedule: str, it: int, total: int, warmup: int, min_ratio: float, power: float) -> float:
    """The factor before ``optim.warmup_style`` existed, frozen here to hold the default to it."""
    if it < warmup:
        return (it + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min((it - warmup) / max(total - warmup, 1), 1.0)
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return max((1.0 - progress) ** power, min_ratio)


MMCV_CASES = [  # policy, max_iters, warmup_iters, warmup_ratio, min_lr_ratio, power
    ("poly", 5000, 1500, 1e-6, 0.0, 1.0),  # the authors' 5k self-aligned fine-tune
    ("poly", 160000, 1500, 1e-6, 0.0, 1.0),  # their 160k seg runs
    ("poly", 2000, 300, 0.1, 0.0, 0.9),
    ("poly", 2000, 300, 0.1, 0.02, 0.9),  # mmcv poly lifts to min_lr, not floored there
    ("poly", 2000, 300, 1e-3, 0.05, 1.0),
    ("cosine", 38400, 12800, 1e-3, 1e-8, 1.0),  # their depth runs
    ("cosine", 2000, 300, 0.1, 0.05, 1.0),
]


@pytest.mark.parametrize("policy, total, warmup, ratio, min_ratio, power", MMCV_CASES)
def test_mmcv_style_matches_mmcv_lr_updater(policy, total, warmup, ratio, min_ratio, power):
    f = LRFactor(policy, total, warmup, min_ratio, power, warmup_style="mmcv", warmup_ratio=ratio)
    for it in (0, 1, warmup - 1, warmup, total // 2, total - 1):
        expected = mmcv_lr(policy, it, total, warmup, ratio, min_ratio * BASE_LR, power)
        assert BASE_LR * f(it) == pytest.approx(expected, rel=1e-12, abs=1e-20), it


def test_mmcv_style_golden_values_of_the_5k_fine_tune():
    f = LRFactor("poly", 5000, 1500, 0.0, 1.0, warmup_style="mmcv", warmup_ratio=1e-6)
    assert f(0) == pytest.approx(1e-6)  # warmup_ratio of the regular LR, which is 1 at it = 0
    assert f(1500) == pytest.approx(0.7)  # 1 - 1500/5000: 4.2e-6 at lr 6e-6 (ours: 6e-6)
    assert f(750) == pytest.approx((1 - 750 / 5000) * (1 - 0.5 * (1 - 1e-6)))
    assert f(4999) == pytest.approx(1 / 5000)
    ours = LRFactor("poly", 5000, 1500, 0.0, 1.0)
    assert ours(1500) == 1.0 and ours(2000) == pytest.approx(5000 / 3500 * f(2000))  # the gap closed


@pytest.mark.parametrize("schedule", ["cosine", "poly", "constant"])
@pytest.mark.parametrize("total, warmup, min_ratio, power", [(100, 10, 1e-3, 1.0), (37, 0, 0.2, 0.9),
                                                             (5000, 1500, 0.0, 1.0), (5, 5, 1e-3, 2.0)])
def test_default_style_is_the_old_factor_exactly(schedule, total, warmup, min_ratio, power):
    f = LRFactor(schedule, total, warmup, min_ratio, power)
    assert f.warmup_style == "ours"
    assert [f(it) for it in range(total + 1)] == [old_factor(schedule, it, total, warmup, min_ratio, power)
                                                  for it in range(total + 1)]


def test_bad_style_or_ratio_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="optim.warmup_style"):
        LRFactor("poly", 10, warmup_style="linear")
    for ratio in (0.0, 1.5):
        with pytest.raises(ConfigError, match="optim.warmup_ratio"):
            LRFactor("poly", 10, warmup_style="mmcv", warmup_ratio=ratio)


def test_trainer_uses_the_mmcv_style(tmp_path):
    cfg = toy_config(**{"train.iters": 10, "train.log_interval": 1, "optim.lr": 0.1, "optim.schedule": "poly",
                        "optim.warmup_iters": 4, "optim.min_lr_ratio": 0.0, "optim.warmup_style": "mmcv",
                        "optim.warmup_ratio": 0.1})
    train(cfg, task=TASK, work_dir=tmp_path, progress=False, final_eval=False)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    # the logged lr is the one for the next step: steps 1..9 (the last line holds the end value, 0)
    expected = [0.1 * (1 - it / 10) * (1 - (1 - it / 4) * 0.9 if it < 4 else 1.0) for it in range(1, 11)]
    assert lrs[:10] == pytest.approx(expected)
