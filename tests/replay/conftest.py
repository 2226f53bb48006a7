"""Fixtures shared by the replay tests: the tiny synthetic world and the tiny fusion model (built once)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bev_ddp.bev.schema import BEVConfig
from bev_ddp.config import load_config
from bev_ddp.data.synthetic import tiny_world
from bev_ddp.engine.task import get_task

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """One scene with one keyframe (9 LiDAR sweeps before it at 20 Hz)."""
    return tiny_world(tmp_path_factory.mktemp("replay_world"), samples_per_scene=1)


@pytest.fixture(scope="session")
def cfg():
    return load_config(CONFIG, schema=BEVConfig)


@pytest.fixture(scope="session")
def model(cfg):
    """The tiny fusion DDP model with seed-0 random weights, in eval mode."""
    torch.manual_seed(0)
    return get_task("bev").build_model(cfg).eval()
