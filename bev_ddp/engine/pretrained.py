"""A model from a self-describing checkpoint: the weights and the config they were trained with.

A training checkpoint (:mod:`bev_ddp.engine.checkpoint`) carries its resolved config under
``config``, so a checkpoint or a run folder (its ``latest.pth``) is enough to rebuild the model, the
way ``from_pretrained(path)`` works in diffusers and timm::

    source = resolve_model_source(None, "work_dirs/synth_tiny_fusion_ddp")  # run folder or .pth
    model = build_pretrained(source)                                         # eval mode, .cfg attached

A YAML config is still accepted (and needed for bare state dicts and converted weights, which carry
none); ``key=value`` overrides apply to either config.  Every entry point reads models through
here: ``bev-ddp eval``, ``bev-ddp replay``, ``bev-ddp bench frontier`` and ``bev_ddp.init_model``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import OmegaConf

from bev_ddp.config import config_from_dict
from bev_ddp.engine.checkpoint import LATEST, load_model_weights
from bev_ddp.engine.cli_support import load_task_config
from bev_ddp.engine.task import Task, get_task
from bev_ddp.errors import InputError
from bev_ddp.nn.checkpoint import read_checkpoint

CONFIG_SUFFIXES = (".yaml", ".yml")


def is_config_file(path: str | Path) -> bool:
    """True for a YAML config path (by its suffix)."""
    return Path(path).suffix.lower() in CONFIG_SUFFIXES


def split_config_and_checkpoint(paths: Sequence[str | Path]) -> tuple[Path | None, Path | None]:
    """The positional ``[CONFIG] CHECKPOINT`` of a command: ``(config, checkpoint)``, either may be None.

    One path is the config when it is a YAML file, else the checkpoint (or run folder); two paths
    are the config and the checkpoint, in that order.
    """
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return (paths[0], None) if is_config_file(paths[0]) else (None, paths[0])
    if len(paths) == 2:
        if is_config_file(paths[1]) and not is_config_file(paths[0]):
            raise InputError(f"give the config before the checkpoint: CONFIG CHECKPOINT, got {paths[0]} {paths[1]}")
        return paths[0], paths[1]
    raise InputError(f"expected [CONFIG] CHECKPOINT, got {len(paths)} paths: {' '.join(map(str, paths))}")


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``latest.pth``."""
    path = Path(path)
    if path.is_dir():
        latest = path / LATEST
        if not latest.is_file():
            raise InputError(f"run folder {path} has no {LATEST}")
        return latest
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    return path


def saved_config(content: Any, path: Path, overrides: Sequence[str] = ()) -> tuple[Any, Task]:
    """The config a training checkpoint carries (``content`` = the read file), checked against its
    task's schema, with ``overrides`` applied."""
    data = content.get("config") if isinstance(content, dict) else None
    if not isinstance(data, dict):
        raise InputError(f"checkpoint {path} carries no config (a bare state dict or converted weights): "
                         "give the YAML config too, CONFIG CHECKPOINT")
    names = [item.split("=", 1)[1] for item in overrides if item.startswith("task=")]
    task = get_task(str(names[-1] if names else data.get("task")))
    return config_from_dict(data, overrides, schema=task.schema, source=f"the config saved in {path}"), task


#: config keys naming weight files loaded while the model is built (BEV, then seg / depth)
WEIGHT_FILE_KEYS = ("model.checkpoint", "model.camera.backbone_checkpoint", "model.backbone.checkpoint")


def without_weight_files(cfg: Any) -> Any:
    """A copy of ``cfg`` with every :data:`WEIGHT_FILE_KEYS` entry it has set to None: the same
    architecture, built without reading a weight file (counting parameters; loading a checkpoint
    that holds every weight)."""
    cfg = copy.deepcopy(cfg)
    for key in WEIGHT_FILE_KEYS:
        if OmegaConf.select(cfg, key, default="__absent__") != "__absent__":
            OmegaConf.update(cfg, key, None)
    return cfg


@dataclass
class ModelSource:
    """Where a model comes from: its config and task, and the checkpoint (read once) or None."""

    cfg: Any
    task: Task
    checkpoint: Path | None = None
    content: Any = None  # the checkpoint file as read by read_checkpoint, when its config was needed


def resolve_model_source(config: str | Path | None, checkpoint: str | Path | None,
                         overrides: Sequence[str] = ()) -> ModelSource:
    """Config and checkpoint of a model: ``config`` when given, else the one ``checkpoint`` carries.

    Args:
        config: YAML config, or None to use the checkpoint's.
        checkpoint: a training checkpoint, a run folder (its ``latest.pth``) or a bare state dict
            (with ``config``); None: the config's own ``model.checkpoint`` or initial weights.
        overrides: ``key=value`` config overrides.
    """
    if config is None and checkpoint is None:
        raise InputError("give a checkpoint (or run folder), a config, or both")
    path = checkpoint_file(checkpoint) if checkpoint is not None else None
    if config is not None:  # the checkpoint is read when the model is built
        cfg, task = load_task_config(config, list(overrides))
        return ModelSource(cfg=cfg, task=task, checkpoint=path)
    content = read_checkpoint(path)
    cfg, task = saved_config(content, path, overrides)
    return ModelSource(cfg=cfg, task=task, checkpoint=path, content=content)


def build_pretrained(source: ModelSource, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build ``source``'s model, load its checkpoint, attach the config as ``model.cfg``; eval mode.

    With a checkpoint (every weight, loaded strictly) the config's weight files are not read, so a
    run folder evaluates where its pretrained backbone file is absent."""
    cfg = without_weight_files(source.cfg) if source.checkpoint is not None else source.cfg
    model = source.task.build_model(cfg)
    if source.checkpoint is not None:
        load_model_weights(model, source.checkpoint, content=source.content)
    model.cfg = source.cfg
    return model.to(device).eval()
