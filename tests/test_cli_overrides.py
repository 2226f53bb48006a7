"""One override syntax for every command: ``key=value`` in any position, ``--cfg-options`` (and
replay's ``-o``) as aliases; ``-v``/``-q`` logging levels; defaults shown in ``--help``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bev_ddp.cli import COMMANDS, main
from bev_ddp.engine import cli_support
from bev_ddp.engine.cli_support import HelpFormatter, load_task_config, parse_command_line, split_overrides

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml")


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"bev-ddp {command}", formatter_class=HelpFormatter)
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    cli_support.add_verbosity_arguments(parser)
    return parser


@pytest.mark.parametrize("argv", [
    [CONFIG, "ckpt.pth", "--steps", "1,3", "optim.lr=0.5", "eval.batch_size=3"],  # the failing order
    ["optim.lr=0.5", CONFIG, "eval.batch_size=3", "ckpt.pth", "--steps", "1,3"],
    [CONFIG, "--steps", "1,3", "ckpt.pth", "--cfg-options", "optim.lr=0.5", "eval.batch_size=3"],
    ["--cfg-options", "optim.lr=0.5", "--steps", "1,3", CONFIG, "ckpt.pth", "eval.batch_size=3"],
])
def test_eval_overrides_in_any_position_reach_the_config(argv):
    args = parse_command_line(_parser("eval"), argv)
    assert (args.config_or_checkpoint, args.checkpoint, args.steps) == (CONFIG, "ckpt.pth", "1,3")
    assert args.overrides == ["optim.lr=0.5", "eval.batch_size=3"]
    cfg, _ = load_task_config(args.config_or_checkpoint, args.overrides)
    assert cfg.optim.lr == 0.5 and cfg.eval.batch_size == 3


def test_later_overrides_win_and_option_values_are_not_taken_for_overrides():
    rest, overrides = split_overrides(_parser("eval"), [CONFIG, "c.pth", "--out", "a=b", "optim.lr=1", "optim.lr=2"])
    assert rest == [CONFIG, "c.pth", "--out", "a=b"] and overrides == ["optim.lr=1", "optim.lr=2"]
    cfg, _ = load_task_config(CONFIG, overrides)
    assert cfg.optim.lr == 2


@pytest.mark.parametrize("command, argv", [
    ("train", ["optim.lr=0.25", CONFIG, "--no-eval"]),
    ("info", [CONFIG, "--json", "--cfg-options", "optim.lr=0.25"]),
    ("demo", ["--quick", "optim.lr=0.25"]),
    ("replay", [CONFIG, "-o", "optim.lr=0.25", "--bag", "x.mcap"]),  # replay's older spelling
    ("replay", [CONFIG, "--bag", "x.mcap", "--override", "optim.lr=0.25"]),
    ("replay", ["optim.lr=0.25", CONFIG, "ckpt.pth", "--steps", "2"]),
])
def test_every_command_takes_the_same_override_syntax(command, argv):
    assert parse_command_line(_parser(command), argv).overrides == ["optim.lr=0.25"]


def test_a_non_override_after_cfg_options_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_command_line(_parser("eval"), [CONFIG, "c.pth", "--cfg-options", "notanoverride"])
    assert exc.value.code == 2 and "notanoverride" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["info", "model.head.typo=1", CONFIG],
    ["info", CONFIG, "--depth", "1", "--cfg-options", "model.head.typo=1"],
    ["train", CONFIG, "--no-eval", "model.head.typo=1", "--no-progress"],
])
def test_a_bad_override_in_any_position_is_an_input_error_through_main(argv, capsys):
    assert main(argv) == 2
    assert "typo" in capsys.readouterr().err


def test_verbosity_counts_set_the_log_level():
    try:
        cli_support.set_verbosity(0, 0)
        assert cli_support.log_level() == logging.INFO
        assert cli_support.log_level(main_process=False) == logging.WARNING
        cli_support.set_verbosity(1, 0)
        assert cli_support.log_level() == logging.DEBUG
        cli_support.set_verbosity(0, 1)
        assert cli_support.log_level() == logging.WARNING
        cli_support.set_verbosity(0, 2)
        assert cli_support.log_level() == logging.ERROR
        args = parse_command_line(_parser("train"), ["-vv", CONFIG, "-q"])
        assert (args.verbose, args.quiet) == (2, 1)
    finally:
        cli_support.set_verbosity(0, 0)


# `bev-ddp report` whose body warns (once before and once after the command configured logging)
WARNING_COMMAND = """
import sys, warnings
from bev_ddp import cli
from bev_ddp.commands import report
from bev_ddp.engine.cli_support import setup_logging

def run(args):
    warnings.warn("first warning", UserWarning)
    setup_logging()
    warnings.warn("second warning", UserWarning)
    return 0

report.run = run
sys.exit(cli.main(["report", "metrics.json", *sys.argv[1:]]))
"""


@pytest.mark.parametrize("flags, shown", [([], True), (["-q"], True), (["-qq"], False)])
def test_python_warnings_obey_quiet(flags, shown):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-c", WARNING_COMMAND, *flags], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for message in ("first warning", "second warning"):
        assert (f"UserWarning: {message}" in proc.stderr) is shown, proc.stderr
    assert "UserWarning" not in proc.stdout


@pytest.mark.parametrize("command", ["train", "eval", "replay", "info", "demo", "report"])
def test_help_shows_defaults_and_logging_options(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--verbose" in out and "--quiet" in out
    if command != "report":
        assert "--cfg-options" in out and "key=value in any position" in out
    if command == "replay":
        assert "model.head.ddp.steps" in out and "-o KEY=VALUE" in out  # --steps default, the alias listed
    if command == "info":
        assert "(default: 2)" in out
