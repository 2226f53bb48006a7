"""Output folders that cannot be written (read-only, a file in the way, a full disk) fail before the
work with exit 2 and one line naming the path; nothing is evaluated or trained first."""
from __future__ import annotations

import pytest
from fault_helpers import write_toy_config

from bev_ddp.cli import main


def _blocked(kind, tmp_path, read_only_dir, small_disk):
    if kind == "read-only":
        return read_only_dir / "out"
    if kind == "file in the way":
        (tmp_path / "afile").write_text("x")
        return tmp_path / "afile" / "out"
    return small_disk(256) / "out"  # 256 KiB: less than the 1 MiB every command needs


KINDS = ["read-only", "file in the way", "full disk"]


@pytest.mark.parametrize("kind", KINDS)
def test_eval_out_is_probed_before_the_evaluation(kind, tmp_path, toy_task, toy_checkpoint, capsys, request):
    config, ckpt = toy_checkpoint
    out = _blocked(kind, tmp_path, request.getfixturevalue("read_only_dir") if kind == "read-only" else None,
                   request.getfixturevalue("small_disk") if kind == "full disk" else None)
    assert main(["eval", str(config), str(ckpt), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bev-ddp eval: error: report folder") and str(out) in err


@pytest.mark.parametrize("kind", KINDS)
def test_train_work_dir_is_probed_before_the_training(kind, tmp_path, toy_task, capsys, request):
    config = write_toy_config(tmp_path)
    work = _blocked(kind, tmp_path, request.getfixturevalue("read_only_dir") if kind == "read-only" else None,
                    request.getfixturevalue("small_disk") if kind == "full disk" else None)
    assert main(["train", str(config), "--work-dir", str(work), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bev-ddp train: error: work dir") and str(work) in err


def test_replay_out_under_a_file_fails_before_the_model_is_built(tmp_path, replay_bag, capsys, monkeypatch):
    from bev_ddp.replay import app

    monkeypatch.setattr(app, "load_model", lambda *a, **k: pytest.fail("the model was built before the probe"))
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "out"
    rc = main(["replay", str(replay_bag["config"]), "--bag", str(replay_bag["bag"]), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "a file is in the way" in err and str(out) in err
