"""Load a ``configs/mmdet3d/`` config for mmengine's Runner, pointed at a dataroot.

mmengine copies a config's ``data_root`` into every dataset and transform when the file is read, so
``--cfg-options data_root=...`` alone changes nothing; :func:`load_runner_config` rewrites each
place a dataroot is used (datasets' ``data_root``, :class:`~.transforms.BEVMapLabels`' ``dataroot``), and
likewise every ``config=`` that names the bev_ddp config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmengine.config import Config

from bev_ddp.errors import InputError


def _set_roots(node: Any, root: str) -> None:
    if isinstance(node, dict):
        if node.get("type") == "BEVMapLabels":
            node["dataroot"] = root
        if "data_root" in node and "ann_file" in node:
            node["data_root"] = root
        for value in node.values():
            _set_roots(value, root)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _set_roots(value, root)


def _set_bev_config(node: Any, old: str, new: str) -> None:
    if isinstance(node, dict):
        if node.get("config") == old:
            node["config"] = new
        for value in node.values():
            _set_bev_config(value, old, new)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _set_bev_config(value, old, new)


def load_runner_config(path: str | Path, *, data_root: str | Path | None = None, work_dir: str | Path | None = None,
                       bev_config: str | Path | None = None, options: dict[str, Any] | None = None) -> Config:
    """The mmengine config of ``path`` with its dataroot, work folder, bev_ddp config (every ``config=``
    that names the file's ``bev_ddp_config``) and ``options`` (dotted keys) set."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mmdet3d config {path} does not exist")
    cfg = Config.fromfile(str(path))
    if data_root is not None:
        root = str(Path(data_root)) + "/"
        cfg.data_root = root
        for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if key in cfg:
                _set_roots(cfg[key], root)
    if bev_config is not None and "bev_ddp_config" in cfg:
        old, cfg.bev_ddp_config = cfg.bev_ddp_config, str(bev_config)
        for key in ("model", "train_dataloader", "val_dataloader", "test_dataloader", "val_evaluator",
                    "test_evaluator"):
            if key in cfg:
                _set_bev_config(cfg[key], old, str(bev_config))
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    if options:
        cfg.merge_from_dict(options)
    return cfg
