"""Helpers shared by the ``train``, ``eval``, ``report`` and ``demo`` commands."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from bev_ddp.config import load_config
from bev_ddp.engine.task import Task, get_task
from bev_ddp.errors import ConfigError


def setup_logging(*, main_process: bool = True) -> None:
    """INFO on the main rank, WARNING elsewhere; a no-op when logging is already configured."""
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def task_name_of(path: str | Path, overrides: Sequence[str] = ()) -> str:
    """The ``task:`` of a config (after ``_base_`` inheritance and a ``task=`` override)."""
    for item in overrides:
        if item.startswith("task="):
            return item.split("=", 1)[1]
    raw = load_config(path)
    name = raw.get("task")
    if not name:
        raise ConfigError(f"config {path} has no 'task:' key (bev, seg or depth)")
    return str(name)


def load_task_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Any, Task]:
    """Load ``path`` against its task's schema; returns ``(cfg, task)``."""
    task = get_task(task_name_of(path, overrides))
    return load_config(path, list(overrides), schema=task.schema), task


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run ``body``; a diverged training prints one clear line instead of a traceback (bad input,
    :class:`~bev_ddp.errors.InputError`, is reported by :func:`bev_ddp.cli.main`)."""
    from bev_ddp.engine.trainer import NonFiniteLossError

    try:
        return body()
    except NonFiniteLossError as exc:
        print(f"{prog}: training stopped: {exc}", file=sys.stderr)
        return 1
