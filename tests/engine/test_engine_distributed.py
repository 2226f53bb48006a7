"""Two CPU processes on gloo: DistributedDataParallel training and evaluation gathering.

Honest properties: (1) both ranks end with bit-identical weights; (2) with a deterministic
loss, 2 ranks × batch b train the same model as 1 process × batch 2b over the same sample order
(DDP averages the two ranks' gradients = the gradient of the mean over the union), up to
float summation order; (3) the split's IoU counts gathered over the two shards equal the counts
of one process evaluating the whole split with the same weights.
"""
from __future__ import annotations

import json
import os
import socket

import torch
import torch.multiprocessing as mp

from bev_ddp.comm import shutdown
from bev_ddp.engine.evaluation import evaluate_task
from bev_ddp.engine.trainer import Trainer, train
from engine_toy_task import TASK, toy_config

OVERRIDES = {"train.iters": 6, "train.checkpoint_interval": 3, "optim.grad_clip": 0.5, "eval.steps": [1]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, work_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    finished = False
    try:
        trainer = Trainer(cfg=toy_config(**{**OVERRIDES, "train.batch_size": 2}), task=TASK, work_dir=work_dir,
                          progress=False)
        assert trainer.dist.world_size == world_size
        trainer.run()
        torch.save(trainer.model.state_dict(), os.path.join(work_dir, f"rank{rank}.pt"))
        del trainer  # its DDP wrapper holds the group
        finished = True
    finally:
        shutdown(synchronize=finished)


def test_two_process_gloo_training_matches_single_process_and_gathers_eval(tmp_path):
    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(ddp_dir)), nprocs=2, join=True)
    rank0 = torch.load(ddp_dir / "rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_dir / "rank1.pt", weights_only=True)
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k

    single_dir = tmp_path / "single"
    cfg = toy_config(**{**OVERRIDES, "train.batch_size": 4})
    train(cfg, task=TASK, work_dir=single_dir, progress=False, final_eval=False)
    single = torch.load(single_dir / "latest.pth", weights_only=True)["model"]
    initial = TASK.build_model(cfg).state_dict()
    for k in ("conv.weight", "conv.bias"):
        torch.testing.assert_close(rank0[k], single[k], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(rank0[k], initial[k])  # it did train

    # rank 0 wrote the report of the gathered evaluation; redo it in one process with the same weights
    gathered = json.loads((ddp_dir / "eval" / "iter_0000006" / "metrics.json").read_text())
    model = TASK.build_model(cfg)
    model.load_state_dict(rank0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each rank ran one thread: the same reduction order, so the same counts
    try:
        alone = evaluate_task(cfg, TASK, model, steps=[1], device=torch.device("cpu"), out_dir=None, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert gathered["num_samples"] == alone.metrics["num_samples"] == 16
    assert gathered["steps"]["1"]["counts"] == alone.metrics["steps"]["1"]["counts"]
    assert gathered["steps"]["1"]["uncertainty"]["pixels"] == alone.metrics["steps"]["1"]["uncertainty"]["pixels"]
