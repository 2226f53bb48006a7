"""Shared test settings: deterministic, CPU, two threads (the machine CI runs on)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

TEST_THREADS = int(os.environ.get("BEV_DDP_TEST_THREADS", "2"))
torch.set_num_threads(TEST_THREADS)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: learnability / end-to-end tests (still run in CI)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def _module_threads():
    """Every module, and its module-scoped fixtures (a training), starts at the suite's thread count,
    whatever an earlier in-process benchmark set: results must not depend on the order tests run in."""
    torch.set_num_threads(TEST_THREADS)
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.set_num_threads(TEST_THREADS)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def image_task_export(tmp_path_factory) -> Path:
    """(image, label, depth) export of a small synthetic world, shared by the seg and depth tests.

    Four scenes of four keyframes at 96×176: 72 camera images of three scenes for training, 24 of
    a held-out scene for evaluation (the split ``bev-ddp prepare`` uses).  LiDAR is kept coarse:
    the image tasks do not read it.
    """
    from bev_ddp.data.synthetic import export_image_tasks, generate_world

    base = tmp_path_factory.mktemp("image_tasks")
    world = generate_world(base / "world", num_scenes=4, samples_per_scene=4, seed=0, image_size=(96, 176),
                           lidar_azimuth_steps=90, town_size=240.0)
    return export_image_tasks(world, base / "export")
