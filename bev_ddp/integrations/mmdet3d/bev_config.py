"""The bev_ddp YAML config behind an mmdet3d config's model and transforms (one source of settings)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from bev_ddp.errors import InputError


def load_bev_config(config: str | Path, overrides: Sequence[str] = ()) -> Any:
    """A ``task: bev`` config with ``key=value`` overrides (as on our command line), checked by its schema."""
    from bev_ddp.engine.cli_support import load_task_config

    cfg, _ = load_task_config(str(config), list(overrides))
    if cfg.task != "bev":
        raise InputError(f"{config}: the mmdet3d front end needs a BEV config (task: bev), not task {cfg.task!r}")
    return cfg
