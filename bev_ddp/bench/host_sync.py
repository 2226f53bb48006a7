"""``forbid_host_sync()``: fail on any read-back of tensor values inside a ``with`` block.

Used to prove that a loop (the DDIM sampling loop) never waits for the device:

* on every device, the Tensor methods that return host values (``item``, ``tolist``, ``numpy``,
  ``bool`` / ``int`` / ``float`` / ``index`` conversion) and ``nonzero`` (its output size is data
  dependent) raise :class:`HostSyncError`;
* on CUDA, ``torch.cuda.set_sync_debug_mode("error")`` also catches synchronising copies and
  kernels inside ATen (a blocking device->host or host->device copy, ``cudaStreamSynchronize``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PATCHED = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero")


class HostSyncError(RuntimeError):
    """A tensor's values were read back to the host where that is forbidden."""


def _raiser(name: str):
    def method(self, *args, **kwargs):
        raise HostSyncError(f"Tensor.{name}() reads a {self.device.type} tensor's values back to the host")

    return method


@contextlib.contextmanager
def forbid_host_sync(cuda: bool | None = None) -> Iterator[None]:
    """Raise :class:`HostSyncError` on host read-backs inside the block.

    Args:
        cuda: also set CUDA's sync debug mode to "error" (default: when CUDA is available).
    """
    saved = {name: getattr(torch.Tensor, name) for name in PATCHED}
    saved_nonzero = torch.nonzero
    use_cuda = torch.cuda.is_available() if cuda is None else cuda
    previous_mode = torch.cuda.get_sync_debug_mode() if use_cuda else None
    try:
        for name in PATCHED:
            setattr(torch.Tensor, name, _raiser(name))
        torch.nonzero = _raiser("nonzero")
        if use_cuda:
            torch.cuda.set_sync_debug_mode("error")
        yield
    finally:
        if use_cuda:
            torch.cuda.set_sync_debug_mode(previous_mode)
        torch.nonzero = saved_nonzero
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
