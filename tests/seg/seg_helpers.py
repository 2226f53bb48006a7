"""Tiny models and batches shared by the seg and depth tests."""
from __future__ import annotations

from pathlib import Path

import torch

from bev_ddp.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_cfg(task, name: str, *overrides: str):
    """The ``configs/<task.name>/<name>`` config, with overrides."""
    return load_config(CONFIGS / task.name / name, list(overrides), schema=task.schema)


def image_batch(b: int = 2, h: int = 32, w: int = 48, *, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, h, w, generator=g)
