"""Training loop: learning, exact resume, self-aligned phase, NaN stop, Ctrl-C, logs and checkpoints."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bev_ddp.engine.checkpoint import load_checkpoint
from bev_ddp.engine.trainer import NonFiniteLossError, train
from engine_toy_task import TASK, toy_config


def _weights(path):
    return load_checkpoint(path)["model"]


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_learns_and_writes_logs_checkpoints_and_report(tmp_path):
    cfg = toy_config(**{"train.iters": 30, "eval.steps": [1, 2]})
    result = train(cfg, task=TASK, work_dir=tmp_path, progress=False)
    assert result.status == "finished" and result.step == 30
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == list(range(2, 31, 2))
    assert train_records[-1]["loss"] < 0.6 * train_records[0]["loss"]
    assert {"lr", "grad_norm", "it_per_s", "loss_bce"} <= set(train_records[0])
    assert any(r["kind"] == "eval/steps1" and "mIoU" in r for r in records)
    assert list((tmp_path / "tb").iterdir()), "no TensorBoard event file"
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("iter_*.pth"))
    assert ckpts == ["iter_0000024.pth", "iter_0000028.pth", "iter_0000030.pth"]  # keep_checkpoints=3
    latest = load_checkpoint(tmp_path / "latest.pth")
    assert latest["step"] == 30 and latest["config"]["train"]["iters"] == 30
    metrics = result.evals[30].metrics
    assert metrics["num_samples"] == 16
    assert metrics["steps"]["1"]["summary"]["mIoU"] > 0.7  # a linear problem, learnt by a 1x1 conv
    report_dir = tmp_path / "eval" / "iter_0000030"
    for name in ("metrics.json", "per_class_iou.csv", "report.md", "maps.png", "visuals.npz"):
        assert (report_dir / name).is_file(), name


def test_lr_follows_warmup_then_cosine(tmp_path):
    cfg = toy_config(**{"train.iters": 10, "train.log_interval": 1, "optim.warmup_iters": 4, "optim.lr": 0.1})
    train(cfg, task=TASK, work_dir=tmp_path, progress=False, final_eval=False)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    # the logged lr is the one for the next step: warm-up 0.025, 0.05, 0.075, 0.1 then cosine down
    assert lrs[:3] == pytest.approx([0.05, 0.075, 0.1])
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_bit_identical(tmp_path, num_workers):
    # 8 batches per epoch: the checkpoint at step 10 lies inside the second epoch
    overrides = {"train.iters": 15, "train.checkpoint_interval": 5, "model.noise": 0.3, "train.num_workers": num_workers}
    straight = tmp_path / "straight"
    train(toy_config(**overrides), task=TASK, work_dir=straight, progress=False, final_eval=False)
    # a fresh Trainer (new model, optimizer, loader) continues from the middle checkpoint
    resumed = tmp_path / "resumed"
    train(toy_config(**overrides), task=TASK, work_dir=resumed, progress=False, final_eval=False,
          resume=straight / "checkpoints" / "iter_0000010.pth")
    _assert_same_state(_weights(straight / "latest.pth"), _weights(resumed / "latest.pth"))
    # a different seed gives different weights: the comparison above can fail
    other = tmp_path / "other"
    train(toy_config(**{**overrides, "train.seed": 1}), task=TASK, work_dir=other, progress=False, final_eval=False)
    assert not torch.equal(_weights(straight / "latest.pth")["conv.weight"], _weights(other / "latest.pth")["conv.weight"])


@pytest.mark.parametrize("self_aligned", [3, 10])  # 10 = every iteration (a self-aligned fine-tune run)
def test_self_aligned_phase_covers_the_last_iterations(tmp_path, self_aligned):
    cfg = toy_config(**{"train.iters": 10, "train.self_aligned_iters": self_aligned})
    train(cfg, task=TASK, work_dir=tmp_path, progress=False, final_eval=False)
    state = _weights(tmp_path / "latest.pth")
    assert int(state["calls"]) == 10 and int(state["self_aligned_calls"]) == self_aligned


def test_nan_loss_stops_after_saving_last_good_state(tmp_path):
    cfg = toy_config(**{"train.iters": 10, "model.nan_at_call": 5, "train.checkpoint_interval": 100})
    with pytest.raises(NonFiniteLossError, match="step 5"):
        train(cfg, task=TASK, work_dir=tmp_path, progress=False, final_eval=False)
    ckpt = load_checkpoint(tmp_path / "latest.pth")
    assert ckpt["step"] == 5
    assert int(ckpt["model"]["calls"]) == 5  # buffers of the failed forward were rolled back
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # the saved state equals an uninterrupted run's state at step 5
    ref = tmp_path / "ref"
    train(toy_config(**{"train.iters": 10, "train.checkpoint_interval": 5}), task=TASK, work_dir=ref, progress=False,
          final_eval=False)
    _assert_same_state(ckpt["model"], _weights(ref / "checkpoints" / "iter_0000005.pth"))


def test_sigint_saves_and_resume_finishes_identically(tmp_path):
    overrides = {"train.iters": 10, "model.noise": 0.2, "train.checkpoint_interval": 100}
    run = tmp_path / "run"
    result = train(toy_config(**{**overrides, "model.interrupt_at_call": 3}), task=TASK, work_dir=run, progress=False,
                   final_eval=False)
    assert result.status == "interrupted" and result.step == 4
    assert load_checkpoint(run / "latest.pth")["step"] == 4
    finished = train(toy_config(**overrides), task=TASK, work_dir=run, progress=False, final_eval=False,
                     resume=run)
    assert finished.status == "finished" and finished.step == 10
    straight = tmp_path / "straight"
    train(toy_config(**overrides), task=TASK, work_dir=straight, progress=False, final_eval=False)
    _assert_same_state(_weights(run / "latest.pth"), _weights(straight / "latest.pth"))


def test_dataset_epoch_follows_training_and_resume(tmp_path):
    from bev_ddp.engine.trainer import Trainer

    cfg = toy_config(**{"train.iters": 10, "train.checkpoint_interval": 9})  # 8 batches per epoch
    trainer = Trainer(cfg=cfg, task=TASK, work_dir=tmp_path, progress=False, final_eval=False)
    trainer.run()
    assert trainer.train_set.epoch == 1 and trainer.epoch == 1 and trainer.position == 2
    again = Trainer(cfg=cfg, task=TASK, work_dir=tmp_path / "again", progress=False, final_eval=False)
    again.run(resume=tmp_path / "checkpoints" / "iter_0000009.pth")
    assert again.train_set.epoch == 1


@pytest.mark.cuda
def test_amp_runs_on_cuda_with_a_grad_scaler(tmp_path):
    from bev_ddp.engine.trainer import Trainer

    trainer = Trainer(cfg=toy_config(**{"train.iters": 20, "train.amp": True}), task=TASK, work_dir=tmp_path,
                      progress=False, final_eval=False)
    assert trainer.amp and trainer.dist.device.type == "cuda"
    result = trainer.run()
    assert result.status == "finished"
    ckpt = load_checkpoint(tmp_path / "latest.pth")
    assert ckpt["scaler"] is not None and ckpt["scaler"]["scale"] > 0


def test_amp_is_off_on_the_cpu(tmp_path):
    from bev_ddp.engine.trainer import Trainer

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    trainer = Trainer(cfg=toy_config(**{"train.iters": 2, "train.amp": True}), task=TASK, work_dir=tmp_path,
                      progress=False, final_eval=False)
    assert not trainer.amp and not trainer.scaler.is_enabled()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.batch_size": 64}, "too few for train.batch_size=64"),
        ({"train.self_aligned_iters": 20}, "self_aligned_iters"),
        ({"optim.schedule": "step"}, "optim.schedule"),
        ({"train.log_interval": 0}, "log_interval"),
    ],
)
def test_bad_training_settings_are_config_errors(tmp_path, overrides, message):
    from bev_ddp.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        train(toy_config(**overrides), task=TASK, work_dir=tmp_path, progress=False)


def test_resume_from_a_foreign_file_is_an_input_error(tmp_path):
    from bev_ddp.errors import InputError

    bad = tmp_path / "x.pth"
    torch.save({"model": {}}, bad)
    with pytest.raises(InputError, match="lacks the key"):
        train(toy_config(), task=TASK, work_dir=tmp_path / "w", progress=False, resume=bad)
    with pytest.raises(InputError, match="not found"):
        train(toy_config(), task=TASK, work_dir=tmp_path / "w", progress=False, resume=tmp_path / "none")


def test_resume_with_more_iterations_follows_the_new_schedule(tmp_path):
    base = {"train.log_interval": 1, "optim.warmup_iters": 0, "optim.min_lr_ratio": 0.0}
    train(toy_config(**{**base, "train.iters": 4}), task=TASK, work_dir=tmp_path / "a", progress=False,
          final_eval=False)
    train(toy_config(**{**base, "train.iters": 8}), task=TASK, work_dir=tmp_path / "b", progress=False,
          final_eval=False, resume=tmp_path / "a")
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    # cosine over 8 iterations from 0.05, logged after steps 5..8 (the old 4-step schedule had ended at 0)
    expected = [0.05 * 0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(5, 9)]
    assert lrs == pytest.approx(expected)


def test_evaluating_an_empty_split_is_an_input_error(tmp_path):
    from bev_ddp.engine.evaluation import evaluate_task
    from bev_ddp.errors import InputError

    cfg = toy_config(**{"data.num_val": 0})
    with pytest.raises(InputError, match="'val' split has no samples"):
        evaluate_task(cfg, TASK, TASK.build_model(cfg), steps=[1], device=torch.device("cpu"), out_dir=None)
