"""Shared test settings: deterministic, CPU, two threads (the machine CI runs on)."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("BEV_DDP_TEST_THREADS", "2")))


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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
