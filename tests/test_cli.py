"""The ``bev-ddp`` command table and argument handling."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bev_ddp.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out, name


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["trian"])
    assert exc.value.code == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["train", "eval", "report", "demo"])
def test_engine_commands_expose_the_module_contract(name):
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.add_arguments) and callable(module.run)


def test_subcommand_help_shows_its_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--steps" in out and "--max-samples" in out


def test_train_with_a_config_typo_fails_with_close_matches(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: bev\ntrain:\n  itres: 3\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "train.itres" in err and "train.iters" in err


def test_train_without_task_key_is_an_input_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  iters: 3\n")
    assert main(["train", str(cfg)]) == 2
    assert "no 'task:' key" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "bev_ddp", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout


REFERENCE_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*/reference/*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config", REFERENCE_CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_info_counts_every_reference_config_without_its_weight_files(config, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the relative checkpoint paths the configs name do not exist here
    assert main(["info", str(config), "--json"]) == 0
    counted = json.loads(capsys.readouterr().out)
    assert counted["total"] > 1_000_000 and counted["parts"]
