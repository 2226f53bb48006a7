"""A full disk (ENOSPC) while writing: a real small tmpfs where mounting works, a simulated writer
failure everywhere.  The command ends with one line and exit 1; every output file is complete and
readable (the previous one, or the frames written before the failure) or absent, never 0 bytes."""
from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fault_helpers import fill_disk as _fill
from fault_helpers import no_temporaries, one_line

from bev_ddp.cli import main


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@dataclass
class _Prediction:
    probs: torch.Tensor  # [1, K, X, Y]
    uncertainty: torch.Tensor  # [1, X, Y]


class _NoiseModel(torch.nn.Module):
    """Random maps (incompressible, so every frame takes room on the disk)."""

    def predict(self, batch, steps, seed=0):
        g = torch.Generator().manual_seed(seed + len(batch["points"]))
        return {s: _Prediction(torch.rand(1, 6, 64, 64, generator=g), torch.rand(1, 64, 64, generator=g)) for s in steps}


@pytest.mark.parametrize("how", ["tmpfs", "simulated"])
def test_replay_on_a_full_disk_keeps_the_frames_written_before(how, tmp_path, replay_bag, monkeypatch, capsys,
                                                                 small_disk):
    from test_replay_outputs import read_mcap

    from bev_ddp.replay import app, outputs

    monkeypatch.setattr(app, "load_model", lambda *a, **k: _NoiseModel())
    disk = small_disk(2048) if how == "tmpfs" else tmp_path / "disk"
    write = outputs.ReplayOutputs.write

    def write_then_fill(self, record, *args, **kwargs):
        if self.frames_written == 2:  # the disk fills up while frame 2 is written
            if how == "tmpfs":
                _fill(disk, leave=16 << 10)
            else:
                sink_write = outputs._Sink.write

                def half_then_enospc(sink, data):  # once: cutting the file back frees the room again
                    monkeypatch.setattr(outputs._Sink, "write", sink_write)
                    sink_write(sink, data[: len(data) // 2])
                    raise _enospc()

                monkeypatch.setattr(outputs._Sink, "write", half_then_enospc)
        return write(self, record, *args, **kwargs)

    monkeypatch.setattr(outputs.ReplayOutputs, "write", write_then_fill)
    out = disk / "out"
    rc = main(["replay", str(replay_bag["config"]), "--bag", str(replay_bag["bag"]), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in one_line(err, "bev-ddp replay: error:")
    frames = [m["index"] for _, _, m in read_mcap(out / "replay.mcap").get("/bev/frame", [])]
    lines = [json.loads(line)["index"] for line in (out / "frames.jsonl").read_text().splitlines()]
    assert 2 <= len(frames) < replay_bag["frames"] and frames == lines == sorted(frames)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == len(frames) and "No space left" in summary["output_error"]
    no_temporaries(out)


def test_eval_report_write_failure_leaves_complete_files(tmp_path, toy_task, toy_checkpoint, monkeypatch, capsys):
    from PIL import Image

    from bev_ddp.report import plots

    config, ckpt = toy_checkpoint
    out = tmp_path / "report"
    assert main(["eval", str(config), str(ckpt), "--out", str(out), "--no-progress", "--steps", "1"]) == 0
    before = (out / "maps.png").read_bytes()

    def half_written_png(visuals, path):  # the disk fills up in the middle of the maps figure
        Path(path).write_bytes(before[: len(before) // 2])
        raise _enospc()

    monkeypatch.setattr(plots, "plot_maps", half_written_png)
    capsys.readouterr()
    assert main(["eval", str(config), str(ckpt), "--out", str(out), "--no-progress", "--steps", "1,2"]) == 1
    assert "No space left on device" in one_line(capsys.readouterr().err, "bev-ddp eval: error:")
    assert (out / "maps.png").read_bytes() == before  # the previous complete figure
    assert json.loads((out / "metrics.json").read_text())["steps"]
    for path in out.iterdir():
        assert path.stat().st_size > 0, path
        if path.suffix == ".png":
            Image.open(path).verify()
    no_temporaries(out)


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path, toy_task, monkeypatch, capsys):
    from fault_helpers import write_toy_config

    from bev_ddp.engine import checkpoint
    from bev_ddp.engine.checkpoint import load_checkpoint

    save = torch.save
    calls = []

    def save_then_fail(obj, fh, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint hits a full disk half-way
            fh.write(b"PK\x03\x04 partial")
            raise _enospc()
        return save(obj, fh, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", save_then_fail)
    config = write_toy_config(tmp_path, iters=12)
    assert main(["train", str(config), "--no-progress", "--no-eval"]) == 1
    assert "No space left on device" in one_line(capsys.readouterr().err, "bev-ddp train: error:")
    work = tmp_path / "work"
    assert load_checkpoint(work / "latest.pth")["step"] == 4
    no_temporaries(work)
