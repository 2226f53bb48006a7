"""``bev-ddp replay`` rejects bad input with a message and exit code 2, before building the model."""
from __future__ import annotations

from pathlib import Path

import pytest

from bev_ddp import cli
from bev_ddp.replay import export
from bev_ddp.replay.topics import default_topic_map
from replay_helpers import rig_recording

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"


@pytest.fixture()
def bag(tmp_path) -> Path:
    return export.write_rosbag2(rig_recording(default_topic_map(), frames=1), tmp_path / "bag")


@pytest.mark.parametrize("extra, message", [
    (["--scene", "synth-0000"], "exactly one of --bag or --scene"),
    (["--steps", "0"], "--steps"),
    (["--latency-budget-ms", "0"], "--latency-budget-ms"),
    (["--sweeps", "0"], "--sweeps"),
    (["--threads", "0"], "--threads"),
    (["--topics", "missing_topics.yaml"], "missing_topics.yaml"),
    (["-o", "model.head.typo=1"], "typo"),
    (["--cfg-options", "model.head.typo=1"], "typo"),
    (["model.head.typo=1"], "typo"),
])
def test_bad_options_exit_with_code_2_and_name_the_problem(bag, tmp_path, capsys, extra, message):
    rc = cli.main(["replay", str(CONFIG), "--bag", str(bag), "--out", str(tmp_path / "out"), "--no-progress", *extra])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unreadable_bag_fails_before_any_output(bag, tmp_path, capsys):
    db = next(bag.glob("*.db3"))
    db.write_bytes(b"not a database" * 100)
    rc = cli.main(["replay", str(CONFIG), "--bag", str(bag), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2 and "cannot be opened" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
