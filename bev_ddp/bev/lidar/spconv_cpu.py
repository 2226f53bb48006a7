"""Make spconv usable on machines without a CUDA driver.

spconv 2.3 asks ``torch.cuda.current_stream()`` for a stream handle in a few code paths even
when every tensor lives on the CPU (e.g. the gather/scatter backward of ``ConvAlgo.Native``
convolutions); without a CUDA driver that call raises.  The CPU code paths ignore the handle, so
:func:`patch_spconv_stream_for_cpu` replaces spconv's ``get_current_stream`` with one that returns
the null stream ``0`` when CUDA is unavailable.  It changes nothing on a machine with CUDA and is
applied once, at import of :mod:`bev_ddp.bev.lidar.sparse_encoder`.

We use the ``spconv-cu120`` wheel on the CPU too: its CPU kernels are the same code as the CPU
wheel's without that wheel's multi-thread race.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from types import ModuleType

import torch

# spconv modules that bind ``get_current_stream`` by name at import
_MODULES_USING_STREAM = ("spconv.pytorch.cppcore", "spconv.pytorch.ops", "spconv.pytorch.utils", "spconv.pytorch.hash")


def _null_stream() -> int:
    """The stream handle for CPU work: 0 (the default stream; ignored by CPU kernels)."""
    return 0


def patch_spconv_stream_for_cpu() -> bool:
    """Install the CPU-safe ``get_current_stream`` when CUDA is unavailable; returns whether it did."""
    if torch.cuda.is_available():
        return False
    for name in _MODULES_USING_STREAM:
        module = importlib.import_module(name)
        if hasattr(module, "get_current_stream"):
            module.get_current_stream = _null_stream
    return True


def import_spconv() -> ModuleType:
    """``import spconv.pytorch`` without its import-time deprecation noise.

    spconv 2.3 decorates functions with ``torch.cuda.amp.custom_fwd`` (a FutureWarning per
    function) and asks ``torch.fx`` whether it is tracing on every call (a logged warning); both
    are about spconv's own code and say nothing about ours, so they are silenced here.  Also
    exposes ``spconv.pytorch.ConvAlgo``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\..*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ccimport\..*")
        import spconv.pytorch as sp
        from spconv.core import ConvAlgo
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    sp.ConvAlgo = ConvAlgo
    return sp
