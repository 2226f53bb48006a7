"""Value checks of inputs (NaN / inf, label ranges): the checks that read a tensor back to the host.

Reading a CUDA tensor's values waits for the device (a synchronisation) and breaks
``torch.compile`` graphs and CUDA-graph capture.  The library therefore runs each value check once
per public call, at its entry (``DDPHead.loss`` / ``predict``, ``BEVFusionModel.predict``, ...),
never inside the sampling loop; shape and dtype checks (host metadata, free) always run.

``BEV_DDP_VALUE_CHECKS=0`` in the environment, or ``with value_checks(False):``, turns the value
checks off; they are skipped while ``torch.compile`` traces.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from bev_ddp.errors import InputError

_enabled = os.environ.get("BEV_DDP_VALUE_CHECKS", "1") != "0"


def value_checks_enabled() -> bool:
    """True when value checks run (the default), False when switched off or while compiling."""
    return _enabled and not torch.compiler.is_compiling()


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Switch the value checks on or off inside a ``with`` block."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise InputError naming ``name`` when the float tensor ``x`` holds NaN or inf (one read-back)."""
    if value_checks_enabled() and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or inf")
