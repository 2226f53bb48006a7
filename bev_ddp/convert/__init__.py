"""``bev-ddp convert``: published checkpoints → bev_ddp checkpoints (see ``README.md`` here).

:func:`convert_checkpoint` reads a BEVFusion or DDP file (``weights_only=True``), builds the
matching reference config's model (``configs/bev/reference/``, or ``config``) for its keys and
shapes, converts (:mod:`bev_ddp.convert.bevfusion`), loads the result strictly and writes
``{"model": state_dict, "convert": {...}}`` atomically.  ``source="swin"`` converts a Swin-T
backbone file (:mod:`bev_ddp.convert.swin`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from bev_ddp.errors import InputError, OutputError
from bev_ddp.nn import checkpoint as nn_checkpoint
from bev_ddp.output_files import probe_output_dir

SOURCES = ("bevfusion", "ddp", "swin")
ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = ROOT / "configs" / "bev" / "reference"


@dataclass
class ConvertResult:
    """What :func:`convert_checkpoint` did: counts and names per category, the config used."""

    out: Path
    config: str | None
    mapped: list[str]
    transformed: list[str]
    dropped: list[str]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (:func:`bev_ddp.nn.checkpoint.read_state_dict`); an empty one is refused."""
    state = nn_checkpoint.read_state_dict(path)
    if not state:
        raise InputError(f"checkpoint {path} holds no state dict of tensors")
    return state


def default_config(src: Mapping[str, torch.Tensor], source: str) -> Path:
    """The reference config matching the modalities (and the head) the source holds."""
    camera = any(k.startswith("encoders.camera.") for k in src)
    lidar = any(k.startswith("encoders.lidar.") for k in src)
    if not camera and not lidar:
        raise InputError("the checkpoint holds neither encoders.camera.* nor encoders.lidar.* keys: "
                         f"not a BEVFusion/DDP model (--from {source})")
    if source == "ddp":
        if not camera:
            raise InputError("DDP released camera and fusion BEV models only; a LiDAR-only file needs --config")
        name = "ddp_fusion" if lidar else "ddp_camera"
    else:
        name = "bevfusion_fusion" if camera and lidar else ("bevfusion_camera" if camera else "bevfusion_lidar")
    return REFERENCE_DIR / f"{name}.yaml"


def _build_target(config: Path, overrides: list[str]) -> tuple[torch.nn.Module, Any]:
    from bev_ddp.engine.cli_support import load_task_config

    cfg, task = load_task_config(config, overrides)
    if cfg.task != "bev":
        raise InputError(f"--config {config} is a {cfg.task!r} config; BEVFusion/DDP weights need task: bev")
    return task.build_model(cfg), cfg


def check_output(src_path: str | Path, out_path: str | Path) -> Path:
    """Refuse an OUT that is SRC (the same file, a link to it, or a link SRC is) or a folder, and probe
    OUT's folder (created if missing) before any work; returns OUT."""
    src, out = Path(src_path), Path(out_path)
    if not src.is_file():  # before the probe creates OUT's folder
        raise InputError(f"checkpoint not found: {src}")
    if out.is_dir():
        raise OutputError(f"OUT {out} is a folder; name the checkpoint file to write")
    if out.exists() and (os.path.samefile(src, out) or out.resolve() == src.resolve()):
        raise OutputError(f"OUT {out} is the source checkpoint {src}: it would be overwritten; name a new file")
    probe_output_dir(out.parent, what=f"OUT {out}: folder")
    return out


def convert_checkpoint(src_path: str | Path, out_path: str | Path, *, source: str,
                       config: str | Path | None = None) -> ConvertResult:
    """Convert ``src_path`` to ``out_path`` (see the module docstring)."""
    from bev_ddp.engine.checkpoint import save_atomic

    if source not in SOURCES:
        raise InputError(f"--from must be one of {', '.join(SOURCES)}, got {source!r}")
    check_output(src_path, out_path)
    src = read_state_dict(src_path)
    if source == "swin":
        from bev_ddp.convert.swin import convert_swin_state_dict

        state, notes = convert_swin_state_dict(src)
        out = save_atomic({"state_dict": state, "convert": {"from": source, "source": str(src_path)}}, out_path)
        return ConvertResult(out=Path(out), config=None, mapped=sorted(src), transformed=list(notes), dropped=[])
    from bev_ddp.convert.bevfusion import convert_state_dict

    cfg_path = Path(config) if config else default_config(src, source)
    overrides = []
    if config is None and any(".time_mlp." in k and k.startswith("heads.map.encoder.layers.") for k in src):
        overrides.append("model.head.ddp.time_conditioning=true")  # a release with per-layer time MLPs
    model, cfg = _build_target(cfg_path, overrides)
    fuse_order = cfg.model.head.ddp.fuse_order if cfg.model.head.type == "ddp" else "map_first"
    conversion = convert_state_dict(src, model.state_dict(), fuse_order=fuse_order)
    try:
        model.load_state_dict(conversion.state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"converted weights do not load strictly into {cfg_path}: {exc}") from exc
    meta = {"from": source, "source": str(src_path), "config": str(cfg_path), "overrides": overrides}
    out = save_atomic({"model": conversion.state, "convert": meta}, out_path)
    return ConvertResult(out=Path(out), config=str(cfg_path), mapped=conversion.mapped,
                         transformed=conversion.transformed, dropped=conversion.dropped)
