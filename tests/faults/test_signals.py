"""SIGINT and SIGTERM mid-run for train, eval and replay, in real child processes.

Each run stops at its next safe point, exits 128 + signal with one line on stderr, and leaves
every output complete and readable (or absent); a second Ctrl-C aborts at once, still with one line.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from fault_helpers import SIGNALS, Child, no_temporaries, one_line, write_toy_config

from bev_ddp.engine.checkpoint import load_checkpoint


def _log_steps(work: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (work / "log.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"]


@pytest.mark.parametrize("sig", SIGNALS)
def test_train_stops_at_a_step_saves_and_exits_128_plus_signal(tmp_path, sig):
    config = write_toy_config(tmp_path, iters=400)
    work = tmp_path / "work"
    child = Child(["train", config, "--no-progress", "--no-eval"], tmp_path, sleep=0.05)
    child.wait_for(lambda: (work / "log.jsonl").is_file() and len(_log_steps(work)) >= 2)
    child.send(sig)
    rc, out, err = child.finish()
    assert rc == 128 + sig
    assert f"interrupted by {signal.Signals(sig).name}" in one_line(err, "bev-ddp train:")
    ckpt = load_checkpoint(work / "latest.pth")
    assert 2 <= ckpt["step"] < 400 and ckpt["step"] == max(_log_steps(work))
    no_temporaries(work)


def test_a_second_ctrl_c_aborts_at_once_with_one_line(tmp_path):
    config = write_toy_config(tmp_path, iters=400)
    work = tmp_path / "work"
    child = Child(["train", config, "--no-progress", "--no-eval"], tmp_path, sleep=0.5)
    child.wait_for(child.marker.is_file)
    child.send(signal.SIGINT)
    time.sleep(0.2)  # still inside the slow step: the second Ctrl-C does not wait for its end
    child.send(signal.SIGINT)
    rc, out, err = child.finish()
    assert rc == 130
    assert "interrupted by SIGINT" in one_line(err, "bev-ddp train:")
    for path in (work / "checkpoints").glob("*.pth") if (work / "checkpoints").is_dir() else []:
        load_checkpoint(path)  # whatever was written is complete
    no_temporaries(work)


@pytest.mark.parametrize("sig", SIGNALS)
def test_eval_stops_between_batches_and_writes_no_partial_report(tmp_path, toy_checkpoint, sig):
    config, ckpt = toy_checkpoint
    out = tmp_path / "report"
    child = Child(["eval", config, ckpt, "--out", out, "--no-progress"], tmp_path, sleep=0.2)
    child.wait_for(child.marker.is_file)
    child.send(sig)
    rc, stdout, err = child.finish()
    assert rc == 128 + sig
    assert "no report written" in one_line(err, "bev-ddp eval:")
    assert out.is_dir() and not any(out.iterdir())  # probed before the work, nothing half-written


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_replay_finishes_its_outputs_on_a_signal(tmp_path, replay_bag, sig):
    from test_replay_outputs import read_mcap

    out = tmp_path / "out"
    child = Child(["replay", replay_bag["config"], "--bag", replay_bag["bag"], "--out", out, "--no-progress",
                   "--threads", "1"], tmp_path)
    child.wait_for(lambda: (out / ".frames.jsonl.tmp").is_file()
                   and (out / ".frames.jsonl.tmp").read_text().count("\n") >= 1, timeout=120)
    child.send(sig)
    rc, stdout, err = child.finish()
    assert rc == 128 + sig
    assert f"interrupted by {signal.Signals(sig).name}" in one_line(err, "bev-ddp replay:")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 1 <= summary["frames"] < replay_bag["frames"]
    frames = [m["index"] for _, _, m in read_mcap(out / "replay.mcap")["/bev/frame"]]
    assert len(frames) == summary["frames"] == len((out / "frames.jsonl").read_text().splitlines())
    no_temporaries(out)


def test_synth_on_a_signal_leaves_no_half_written_dataroot(tmp_path):
    out = tmp_path / "world"
    child = Child(["synth", "--out", out, "--scenes", "2", "--samples-per-scene", "6"], tmp_path)
    child.wait_for(lambda: (tmp_path / ".world.partial" / "samples").is_dir())
    child.send(signal.SIGTERM)
    rc, stdout, err = child.finish()
    assert rc == 143 and "interrupted by SIGTERM" in one_line(err, "bev-ddp synth:")
    assert not out.exists() and not (tmp_path / ".world.partial").exists()
