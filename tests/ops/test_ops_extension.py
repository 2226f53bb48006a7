"""Extension loading, fallback warning, backend() and the setup.py extension list."""
from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import pytest
import torch

import bev_ddp.ops as ops
from bev_ddp.ops import ExtensionFallbackWarning, _extension

from ops_helpers import kernel_expected


def test_cpu_extension_is_live_in_a_normal_install():
    if not kernel_expected():
        pytest.skip("install without extensions")
    assert ops.backend("cpu") == {"bev_pool": "cpu-kernel", "ms_deform_attn": "cpu-kernel"}, _extension.load_error("cpu")


@pytest.fixture
def missing_extension(monkeypatch):
    """Pretend the CPU extension was never built."""
    monkeypatch.delenv("BEV_DDP_DISABLE_KERNELS", raising=False)
    monkeypatch.setitem(_extension._MODULES, "cpu", "bev_ddp._ops_not_built")
    monkeypatch.setattr(_extension, "_cache", {})
    monkeypatch.setattr(_extension, "_errors", {})
    monkeypatch.setattr(_extension, "_warned", set())


def test_missing_extension_falls_back_with_one_warning(missing_extension):
    feats = torch.randn(50, 3)
    coords = torch.randint(0, 4, (50, 4))
    with pytest.warns(ExtensionFallbackWarning, match="bev_ddp._ops_not_built") as record:
        out = ops.bev_pool(feats, coords, 4, (4, 4, 4))
        ops.bev_pool(feats, coords, 4, (4, 4, 4))
        assert ops.backend() == {"bev_pool": "reference", "ms_deform_attn": "reference"}
    assert len([w for w in record if issubclass(w.category, ExtensionFallbackWarning)]) == 1
    assert torch.equal(out, ops.bev_pool_reference(feats, coords, 4, (4, 4, 4)))


def test_disable_switch_selects_reference(monkeypatch):
    monkeypatch.setenv("BEV_DDP_DISABLE_KERNELS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deliberate switch is not a fallback: no warning
        assert ops.backend() == {"bev_pool": "reference", "ms_deform_attn": "reference"}


def test_get_extensions_lists_cpu_and_cuda(monkeypatch, tmp_path):
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bev_ddp_ops_build", root / "ops" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    monkeypatch.setenv("BEV_DDP_CPU_ONLY", "1")
    exts, cmdclass = build.get_extensions(root)
    assert [e.name for e in exts] == ["bev_ddp._ops_cpu"] and "build_ext" in cmdclass
    assert all((root / s).exists() for s in exts[0].sources)
    monkeypatch.delenv("BEV_DDP_CPU_ONLY")
    monkeypatch.setenv("FORCE_CUDA", "1")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "")  # restored after the test
    exts, _ = build.get_extensions(root)
    assert [e.name for e in exts] == ["bev_ddp._ops_cpu", "bev_ddp._ops_cuda"]
    assert all((root / s).exists() for s in exts[1].sources)
    if not torch.cuda.is_available():
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == build.DEFAULT_CUDA_ARCHS
