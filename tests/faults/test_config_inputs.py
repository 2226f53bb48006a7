"""Config paths and values: every bad one ends with exit 2 and exactly one stderr line naming it
(no traceback, no OmegaConf or PyYAML multi-line report)."""
from __future__ import annotations

import pytest
from fault_helpers import ROOT

from bev_ddp.cli import main

CONFIG = str(ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml")


def _only_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("bev-ddp train: error: "), err
    return lines[0]


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=1" + "0" * 400, "bad override value optim.lr=1000"),  # was OverflowError
    ("train.iters=1e99", "bad override value train.iters=1e99: config key train.iters: Value '1e+99'"),
    ("model=", "bad override value model=: config key model: field 'model' is not Optional"),
    ("data.image_size=[-96,176]", "config key data.image_size[0] must be > 0, got -96"),  # was a backbone error
])
def test_bad_override_values_are_one_line_naming_the_key(override, expected, capsys):
    assert main(["train", CONFIG, override]) == 2
    assert expected in _only_line(capsys)


def test_unknown_keys_with_suggestions_are_one_line(capsys):
    assert main(["train", CONFIG, "optim.lrr=1", "train.itres=2"]) == 2
    line = _only_line(capsys)
    assert "optim.lrr (did you mean optim.lr" in line and "train.itres (did you mean train.iters" in line


def test_yaml_syntax_error_is_one_line_with_its_position(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: bev\nmodel: [1\n")
    assert main(["train", str(bad)]) == 2
    assert f"config file {bad} is not valid YAML: expected ',' or ']'" in _only_line(capsys)


def test_a_config_that_is_a_symlink_to_itself(tmp_path, capsys):
    loop = tmp_path / "self.yaml"
    loop.symlink_to(loop.name)
    assert main(["train", str(loop)]) == 2
    assert f"config file {loop} cannot be resolved: a symlink loop" in _only_line(capsys)


def test_a_base_that_is_a_two_link_loop(tmp_path, capsys):
    (tmp_path / "top.yaml").write_text("_base_: a.yaml\ntask: bev\n")
    (tmp_path / "a.yaml").symlink_to("b.yaml")
    (tmp_path / "b.yaml").symlink_to("a.yaml")
    assert main(["train", str(tmp_path / "top.yaml")]) == 2
    line = _only_line(capsys)
    assert f"config file {tmp_path / 'a.yaml'} (a _base_ of {tmp_path / 'top.yaml'}) cannot be resolved" in line


def test_a_config_path_that_is_a_folder_says_so(tmp_path, capsys):
    assert main(["train", str(tmp_path)]) == 2
    assert f"config file {tmp_path} is a folder, not a file" in _only_line(capsys)
