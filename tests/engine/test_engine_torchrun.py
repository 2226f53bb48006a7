"""The real commands under torchrun: 2 CPU processes train the tiny BEV model, then evaluate it.

Property checked: evaluation split over two ranks (counts all-reduced) gives exactly the
metrics of one process evaluating the whole split, and both training ranks write one
consistent checkpoint.  Equal by construction: the ranks take whole batches of the one-process
batching (``ShardBatchSampler``) and the one process runs with the ranks' thread count
(``OMP_NUM_THREADS=1``, torchrun's default), since the thread count changes the order of
floating-point reductions and so can move a probability across a threshold.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bev_ddp.data.synthetic import tiny_world

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # every process, one or two, runs one thread
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    return _run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_port()), "-m", "bev_ddp.cli", *args])


def _one_process(args: list[str]) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "bev_ddp.cli", *args])


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to the interpreter")
def test_torchrun_train_and_eval_on_two_cpu_processes(tmp_path):
    from bev_ddp.data.create_infos import create_infos

    world = tiny_world(tmp_path)
    create_infos(world, "v1.0-mini", tmp_path / "infos", max_sweeps=3)
    data = [f"data.dataroot={world}", f"data.info_dir={tmp_path / 'infos'}"]
    work = tmp_path / "run"
    train = _torchrun(["train", str(CONFIG), *data, "train.iters=3", "train.self_aligned_iters=1",
                       "train.batch_size=1", "train.log_interval=1", "--work-dir", str(work), "--no-eval",
                       "--no-progress"])
    assert train.returncode == 0, train.stderr[-3000:]
    assert "finished at step 3" in train.stdout
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # rank 0 logs once per step, rank 1 not at all
    ckpt = work / "latest.pth"
    assert ckpt.is_file()

    split = _torchrun(["eval", str(CONFIG), str(ckpt), *data, "--steps", "1,2", "--out", str(tmp_path / "ev2"),
                       "--no-progress"])
    assert split.returncode == 0, split.stderr[-3000:]
    alone = _one_process(["eval", str(CONFIG), str(ckpt), *data, "--steps", "1,2", "--out", str(tmp_path / "ev1"),
                          "--no-progress"])
    assert alone.returncode == 0, alone.stderr[-3000:]
    two = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    one = json.loads((tmp_path / "ev1" / "metrics.json").read_text())
    for proc in (train, split):  # both ranks left the group cleanly (no std::terminate on teardown)
        assert "terminate called" not in proc.stderr, proc.stderr[-3000:]
    assert two["num_samples"] == one["num_samples"] >= 2
    for step in ("1", "2"):
        assert two["steps"][step]["counts"] == one["steps"][step]["counts"]
        assert two["steps"][step]["uncertainty"]["errors"] == one["steps"][step]["uncertainty"]["errors"]
    assert (tmp_path / "ev1" / "maps.png").is_file() and (tmp_path / "ev1" / "per_class_iou.csv").is_file()
