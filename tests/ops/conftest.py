"""Fixtures of the op tests: the compiled extensions, or a skip/failure that says why not."""
from __future__ import annotations

import pytest

from bev_ddp.ops import _extension
from ops_helpers import kernel_expected


@pytest.fixture
def cpu_kernel():
    """The compiled CPU extension; skips when this install has none (BEV_DDP_NO_EXT=1)."""
    module = _extension.load("cpu")
    if module is None:
        if kernel_expected():
            pytest.fail(f"bev_ddp._ops_cpu failed to import: {_extension.load_error('cpu')}")
        pytest.skip("built without extensions (BEV_DDP_NO_EXT=1)")
    return module


@pytest.fixture
def cuda_kernel():
    """The compiled CUDA extension (CUDA tests only run on a machine with a GPU)."""
    module = _extension.load("cuda")
    if module is None:
        pytest.fail(f"bev_ddp._ops_cuda failed to import on a CUDA machine: {_extension.load_error('cuda')}")
    return module
