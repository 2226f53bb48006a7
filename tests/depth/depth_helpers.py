"""Config loading and batches for the depth tests."""
from __future__ import annotations

from pathlib import Path

import torch

from bev_ddp.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def depth_cfg(name: str, *overrides: str):
    from bev_ddp.depth.task import TASK

    return load_config(CONFIGS / "depth" / name, list(overrides), schema=TASK.schema)


def depth_batch(b: int = 2, h: int = 64, w: int = 96, *, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(b, 1, h, w, generator=g) * 40 + 1
    depth[:, :, : h // 4] = 0  # invalid rows (sky)
    return {"img": torch.randn(b, 3, h, w, generator=g), "gt_depth": depth}
