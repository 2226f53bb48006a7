"""Input validation shared by the op wrappers: every bad input raises a named ``InputError``."""
from __future__ import annotations

import torch

from bev_ddp.errors import InputError


def check_tensor(name: str, x: object, ndim: int | None = None, dtypes: tuple[torch.dtype, ...] | None = None) -> torch.Tensor:
    """Check that ``x`` is a tensor with ``ndim`` dimensions and one of ``dtypes``."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise InputError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise InputError(f"{name} must have dtype in ({names}), got {str(x.dtype).replace('torch.', '')}")
    return x


def check_same_device(**tensors: torch.Tensor) -> None:
    """Check that all named tensors live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise InputError(f"all inputs must be on one device, got {listing}")
