"""Helpers shared by the commands: config overrides, logging verbosity, config loading, errors.

Overrides have one syntax everywhere: ``key=value`` tokens in any position of the command line
(before, between or after the options), with ``--cfg-options k=v ...`` (mmdet3d's spelling)
accepted as an alias; :func:`add_override_arguments` declares them and :func:`parse_command_line`
pulls them out in order before argparse sees the rest.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from bev_ddp.errors import ConfigError

if TYPE_CHECKING:
    from bev_ddp.engine.task import Task


#: ``key=value`` or ``+key=value`` (dotted keys, list indices); no ``/`` in the key, so paths stay
#: positional arguments
OVERRIDE_TOKEN = re.compile(r"^[+~]?[A-Za-z_][\w\-]*(\.[\w\-\[\]]+)*=")

_verbosity = 0  # -v count minus -q count, set by bev_ddp.cli.main


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default (unless the help text already names it, or it is unset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v: DEBUG)")
    group.add_argument("-q", "--quiet", action="count", default=0,
                       help="less output (-q: warnings only, -qq: errors only)")


def set_verbosity(verbose: int = 0, quiet: int = 0) -> None:
    """Record the command line's ``-v``/``-q`` counts for :func:`setup_logging`."""
    global _verbosity
    _verbosity = int(verbose) - int(quiet)


def log_level(*, main_process: bool = True) -> int:
    """INFO on the main rank by default, DEBUG with ``-v``, WARNING with ``-q``, ERROR with ``-qq``;
    other ranks log at WARNING or the main rank's level, whichever is higher."""
    level = min(max(logging.INFO - 10 * _verbosity, logging.DEBUG), logging.ERROR)
    return level if main_process else max(level, logging.WARNING)


@contextlib.contextmanager
def warnings_follow_verbosity() -> Iterator[None]:
    """While a command runs, Python warnings are WARNING records of the ``py.warnings`` logger
    (``logging.captureWarnings``): shown by default and with ``-q``, hidden with ``-qq``.

    They keep Python's own text on stderr (``file:line: Category: message``) whether or not the
    command configured logging (:func:`setup_logging`).
    """
    logger = logging.getLogger("py.warnings")
    saved = logger.level, logger.propagate
    handler = logging.StreamHandler(sys.stderr)  # formats "%(message)s": the text warnings would print
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(log_level())
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def setup_logging(*, main_process: bool = True) -> None:
    """Configure the root logger (once) and set its level to :func:`log_level` (``-v``/``-q``)."""
    level = log_level(main_process=main_process)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)


def add_override_arguments(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """Declare config overrides: ``key=value`` anywhere, ``--cfg-options`` and ``aliases`` (e.g. ``-o``).

    The parsed namespace gets ``overrides``: every override of the command line, in order.
    """
    group = parser.add_argument_group("config overrides (key=value in any position)")
    group.add_argument("--cfg-options", *aliases, dest="cfg_options", nargs="+", metavar="KEY=VALUE", default=None,
                       help="config overrides, e.g. optim.lr=1e-3 model.head.ddp.depth=2; the same as giving "
                       "key=value anywhere on the command line")
    parser.set_defaults(overrides=[])


def split_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(arguments for argparse, overrides in order): every ``key=value`` token that is not the value
    of an option, and every token after an alias such as ``--cfg-options``."""
    aliases = {s for a in parser._actions if a.dest == "cfg_options" for s in a.option_strings}
    takes_value = {s for a in parser._actions if a.nargs != 0 and a.dest != "cfg_options"
                   for s in a.option_strings}
    rest: list[str] = []
    overrides: list[str] = []
    after_alias = False
    previous = ""
    for token in argv:
        if token in aliases:
            after_alias = True
        elif token == "--":
            rest.append(token)
            after_alias = False
        elif OVERRIDE_TOKEN.match(token) and previous not in takes_value:
            overrides.append(token)
        elif after_alias and not token.startswith("-"):
            parser.error(f"{token!r} after {sorted(aliases)[0]} is not a key=value override")
        else:
            rest.append(token)
            after_alias = False
        previous = token
    return rest, overrides


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args`` with overrides in any position (see :func:`add_override_arguments`)."""
    if not any(action.dest == "overrides" for action in parser._actions) and parser.get_default("overrides") is None:
        return parser.parse_args(argv)
    rest, overrides = split_overrides(parser, argv)
    # an optional positional (``[CONFIG] CHECKPOINT``) is filled even when options come between the two
    intermixed = any(not action.option_strings and action.nargs == "?" for action in parser._actions)
    args = parser.parse_intermixed_args(rest) if intermixed else parser.parse_args(rest)
    args.overrides = overrides
    return args


def task_name_of(path: str | Path, overrides: Sequence[str] = ()) -> str:
    """The ``task:`` of a config (after ``_base_`` inheritance and a ``task=`` override)."""
    from bev_ddp.config import load_config

    for item in overrides:
        if item.startswith("task="):
            return item.split("=", 1)[1]
    raw = load_config(path)
    name = raw.get("task")
    if not name:
        raise ConfigError(f"config {path} has no 'task:' key (bev, seg or depth)")
    return str(name)


def load_task_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Any, "Task"]:
    """Load ``path`` against its task's schema; returns ``(cfg, task)``."""
    from bev_ddp.config import load_config
    from bev_ddp.engine.task import get_task

    task = get_task(task_name_of(path, overrides))
    return load_config(path, list(overrides), schema=task.schema), task


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run ``body``; a diverged training prints one clear line instead of a traceback (bad input,
    :class:`~bev_ddp.errors.InputError`, is reported by :func:`bev_ddp.cli.main`).

    A process group that ``body`` joined (under torchrun) is left before returning: after a
    barrier when ``body`` returned, at once when it raised (see
    :func:`bev_ddp.engine.distributed.shutdown`).
    """
    from bev_ddp.engine.distributed import is_initialized, shutdown
    from bev_ddp.engine.trainer import NonFiniteLossError

    joined_here = not is_initialized()  # a group the caller made is the caller's to leave
    finished = False
    try:
        code = body()
        finished = True
        return code
    except NonFiniteLossError as exc:
        print(f"{prog}: training stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        if joined_here:
            shutdown(synchronize=finished)
