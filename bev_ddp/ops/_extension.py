"""Lazy loading of the compiled op extensions.

``bev_ddp._ops_cpu`` (C++17 + OpenMP) and ``bev_ddp._ops_cuda`` (CUDA) are built by ``setup.py``
from the sources in the top-level ``ops/`` folder.  They are imported on first use, never at
``import bev_ddp``; when one is missing the ops fall back to their pure-PyTorch references and a
single :class:`ExtensionFallbackWarning` says so.  ``BEV_DDP_DISABLE_KERNELS=1`` forces the
references (used by tests and benchmarks to compare both paths in one process);
``with reference_ops():`` does the same inside a block (what the ONNX export traces).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from types import ModuleType
from typing import Iterator

import torch

_MODULES = {"cpu": "bev_ddp._ops_cpu", "cuda": "bev_ddp._ops_cuda"}
_cache: dict[str, ModuleType | None] = {}
_errors: dict[str, str] = {}
_warned: set[str] = set()
_reference_only = False


class ExtensionFallbackWarning(RuntimeWarning):
    """A compiled extension is missing and a pure-PyTorch reference runs instead."""


def kernels_disabled() -> bool:
    """True when ``BEV_DDP_DISABLE_KERNELS=1`` or :func:`reference_ops` asks for the references."""
    return _reference_only or os.environ.get("BEV_DDP_DISABLE_KERNELS", "") == "1"


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Inside the block every op runs its pure-PyTorch reference, without a warning.

    The ONNX export traces the model in this mode: the references are made of operators stock
    onnxruntime runs (``index_add`` -> ScatterND with add, ``grid_sample`` -> GridSample).
    """
    global _reference_only
    previous, _reference_only = _reference_only, True
    try:
        yield
    finally:
        _reference_only = previous


def tracing() -> bool:
    """True while ``torch.compile`` or ``torch.export`` traces: value read-backs must be skipped."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def load(device_type: str) -> ModuleType | None:
    """Return the extension for ``device_type`` ("cpu" or "cuda"), or None when it is unavailable.

    The first failed import emits one warning naming the module and the import error.
    """
    if device_type not in _MODULES or kernels_disabled():
        return None
    if device_type not in _cache:
        try:
            _cache[device_type] = importlib.import_module(_MODULES[device_type])
        except ImportError as exc:  # not built, or built against another torch
            _cache[device_type] = None
            _errors[device_type] = f"{type(exc).__name__}: {exc}"
    module = _cache[device_type]
    if module is None and device_type not in _warned:
        _warned.add(device_type)
        warnings.warn(
            f"compiled extension {_MODULES[device_type]} is not available "
            f"({_errors[device_type]}); bev_pool and ms_deform_attn on {device_type} use the "
            "pure-PyTorch references (slower, more memory). Rebuild with "
            "`pip install --no-build-isolation -e .`.",
            ExtensionFallbackWarning,
            stacklevel=3,
        )
    return module


@torch.compiler.assume_constant_result
def has_kernel(device_type: str, symbol: str) -> bool:
    """True when the extension for ``device_type`` is live and defines ``symbol`` (e.g.
    ``"bev_pool_forward"``).  ``torch.compile`` runs this once while tracing and keeps the answer
    as a constant (no graph break at the import), so switch the references on before compiling.
    """
    module = load(device_type)
    return module is not None and hasattr(module, symbol)


def load_error(device_type: str) -> str | None:
    """The import error of the extension for ``device_type`` after :func:`load`, if any."""
    return _errors.get(device_type)
