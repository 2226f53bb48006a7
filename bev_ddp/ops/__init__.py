"""Compiled ops of bev_ddp with pure-PyTorch references.

``bev_pool`` (lift-splat BEV pooling) and ``ms_deform_attn`` (multi-scale deformable attention)
dispatch to the compiled extensions ``bev_ddp._ops_cpu`` / ``bev_ddp._ops_cuda`` (sources in the
top-level ``ops/`` folder) and fall back to ``*_reference`` with one warning when those are not
built.  :func:`backend` reports which path is live.  The kernels are registered as
``torch.library`` custom ops (``torch.ops.bev_ddp.bev_pool``, ``torch.ops.bev_ddp.ms_deform_attn``,
with fake kernels and gradients: :mod:`bev_ddp.ops._library`), so ``torch.compile`` and
``torch.export`` trace through them; ``with reference_ops():`` runs the references instead (the
ONNX export).
"""
from __future__ import annotations

import torch

from bev_ddp.ops import _extension
from bev_ddp.ops._extension import ExtensionFallbackWarning, reference_ops
from bev_ddp.ops.bev_pool import BEVPool, bev_pool, bev_pool_reference
from bev_ddp.ops.ms_deform_attn import MSDeformAttnSampler, ms_deform_attn, ms_deform_attn_reference

__all__ = [
    "BEVPool",
    "ExtensionFallbackWarning",
    "MSDeformAttnSampler",
    "backend",
    "bev_pool",
    "bev_pool_reference",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "reference_ops",
]


def backend(device: str | torch.device = "cpu") -> dict[str, str]:
    """Which implementation each op uses on ``device`` ("cpu" or "cuda").

    Returns:
        ``{"bev_pool": ..., "ms_deform_attn": ...}`` with values "cpu-kernel", "cuda-kernel" or
        "reference".  Loading a missing extension here emits the fallback warning once.
    """
    device_type = torch.device(device).type
    module = _extension.load(device_type)
    result = {}
    for op in ("bev_pool", "ms_deform_attn"):
        live = module is not None and hasattr(module, f"{op}_forward")
        result[op] = f"{device_type}-kernel" if live else "reference"
    return result
