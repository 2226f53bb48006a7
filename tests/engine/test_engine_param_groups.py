"""optim.no_decay_keys: the trainer's AdamW exempts the named parameters from weight decay."""
from __future__ import annotations

import torch

from bev_ddp.engine.trainer import Trainer
from engine_toy_task import TASK, toy_config


def test_trainer_optimizer_exempts_matching_parameters(tmp_path):
    cfg = toy_config(**{"train.iters": 2, "optim.weight_decay": 0.5, "optim.lr": 0.1, "optim.warmup_iters": 0,
                        "optim.no_decay_keys": ["bias"]})
    trainer = Trainer(cfg=cfg, task=TASK, work_dir=tmp_path, progress=False, final_eval=False)
    groups = trainer.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
    assert groups[0]["params"] == [trainer.model.conv.weight] and groups[1]["params"] == [trainer.model.conv.bias]
    # with zero gradients only decoupled weight decay moves a parameter: the weight shrinks, the bias stays
    weight, bias = trainer.model.conv.weight.detach().clone(), trainer.model.conv.bias.detach().clone()
    for p in trainer.model.parameters():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    assert torch.allclose(trainer.model.conv.weight, weight * (1 - 0.1 * 0.5))
    assert torch.equal(trainer.model.conv.bias, bias)


def test_default_is_one_group_with_decay(tmp_path):
    trainer = Trainer(cfg=toy_config(**{"train.iters": 2}), task=TASK, work_dir=tmp_path, progress=False,
                      final_eval=False)
    assert len(trainer.optimizer.param_groups) == 1
