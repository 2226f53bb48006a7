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


def image_task_export(base: Path) -> Path:
    """(image, label, depth) export of a small synthetic world under ``base``, written once per session.

    Four scenes of four keyframes at 96×176: 72 camera images of three scenes for training, 24 of
    a held-out scene for evaluation (the split ``bev-ddp prepare`` uses).  LiDAR is kept coarse:
    the image tasks do not read it.
    """
    from bev_ddp.data.synthetic import export_image_tasks, generate_world

    out = Path(base) / "image_tasks_4x4"
    if not (out / "meta.json").is_file():
        world = generate_world(Path(base) / "image_world_4x4", num_scenes=4, samples_per_scene=4, seed=0,
                               image_size=(96, 176), lidar_azimuth_steps=90, town_size=240.0)
        export_image_tasks(world, out)
    return out
