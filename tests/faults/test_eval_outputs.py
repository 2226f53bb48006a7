"""``eval`` on a disk that fills up mid-run, and SIGINT inside the DDP sampling loop."""
from __future__ import annotations

import os

from fault_helpers import Child, fill_disk, one_line


def test_eval_on_a_disk_that_fills_up_is_one_line_and_no_zipfile_noise(tmp_path, toy_checkpoint, small_disk):
    config, ckpt = toy_checkpoint
    disk = small_disk(1536)  # passes the 1 MiB probe, then fills while the model runs
    out = disk / "report"
    child = Child(["eval", config, ckpt, "--out", out, "--no-progress", "--steps", "1"], tmp_path, sleep=0.3)
    child.wait_for(child.marker.is_file)
    fill_disk(disk)
    rc, _, err = child.finish()
    assert rc == 1, err
    line = one_line(err, "bev-ddp eval: error:")
    assert "No space left on device" in line
    assert [text for text in err.strip().splitlines() if not text.startswith(("20", "["))] == [line], err
    assert "Exception ignored" not in err
    assert all(p.stat().st_size > 0 for p in out.iterdir())
    os.unlink(disk / "filler")
