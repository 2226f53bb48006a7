"""Bad input to the train / eval / demo commands ends with one clear message and exit code 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from bev_ddp.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", str(CONFIG), "{tmp}/missing.pth"], "checkpoint not found"),
        (["eval", str(CONFIG), "{ckpt}", "--steps", "1,x"], "--steps"),
        (["eval", str(CONFIG), "{ckpt}", "--steps", "0"], "--steps"),
        (["eval", str(CONFIG), "{ckpt}", "--max-samples", "0"], "--max-samples"),
        (["eval", str(CONFIG), "{ckpt}", "optim.lrr=1"], "optim.lr"),
        (["train", "{tmp}/none.yaml"], "config file not found"),
        (["demo", "--config", str(CONFIG), "--out", "{tmp}/d", "model.head.typo=1"], "model.head.type"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path, capsys, argv, message):
    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(b"x")
    argv = [a.format(tmp=tmp_path, ckpt=ckpt) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
