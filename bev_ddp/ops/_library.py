"""The compiled kernels as ``torch.library`` custom ops: ``torch.ops.bev_ddp.*``.

Each op is registered with :func:`torch.library.custom_op`, a CPU kernel and a CUDA kernel
(``register_kernel``: CPU tensors reach ``bev_ddp._ops_cpu``, CUDA tensors ``bev_ddp._ops_cuda``),
a fake (meta) kernel that gives the output's shape and dtype without computing it
(``register_fake``), and its gradient (``register_autograd``).  ``torch.compile`` and
``torch.export`` therefore trace a call as one node instead of breaking the graph there.

==============================================  =================================================
op                                              kernels
==============================================  =================================================
``bev_pool(feats, coords, B, Z, X, Y)``         forward of :func:`bev_ddp.ops.bev_pool`
``bev_pool_backward(grad_out, coords)``         its backward (cell gradient copied to each point)
``ms_deform_attn(value, shapes, loc, attn)``    forward of :func:`bev_ddp.ops.ms_deform_attn`;
                                                ``shapes`` is the level table flattened
                                                ``[h0, w0, h1, w1, ...]`` (host ints)
``ms_deform_attn_backward(..., grad_out, v)``   its backward; ``grad_value`` is an empty tensor
                                                when ``v`` (``need_grad_value``) is False
==============================================  =================================================

The backward ops are not differentiable themselves: a second derivative raises instead of
returning a silently wrong zero.  The ops take checked, contiguous inputs (the Python wrappers in
:mod:`bev_ddp.ops.bev_pool` and :mod:`bev_ddp.ops.ms_deform_attn` check and call them); a missing
extension is the wrappers' business (they run the references), so a kernel here always has its
extension.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor

from bev_ddp.ops import _extension


def _kernels(device_type: str):
    module = _extension.load(device_type)
    if module is None:
        raise RuntimeError(f"bev_ddp ops: the compiled {device_type} extension is not available")
    return module


# -- bev_pool ------------------------------------------------------------------------------------
@torch.library.custom_op("bev_ddp::bev_pool", mutates_args=(), device_types="cpu")
def bev_pool_op(feats: Tensor, coords: Tensor, batch_size: int, nz: int, nx: int, ny: int) -> Tensor:
    """feats [N, C], coords [N, 4] (x, y, z, b) -> [B, C, Z, X, Y] per-cell sums (CPU kernel)."""
    return _kernels("cpu").bev_pool_forward(feats, coords, batch_size, nz, nx, ny)


@bev_pool_op.register_kernel("cuda")
def _bev_pool_cuda(feats: Tensor, coords: Tensor, batch_size: int, nz: int, nx: int, ny: int) -> Tensor:
    return _kernels("cuda").bev_pool_forward(feats, coords, batch_size, nz, nx, ny)


@bev_pool_op.register_fake
def _bev_pool_fake(feats: Tensor, coords: Tensor, batch_size: int, nz: int, nx: int, ny: int) -> Tensor:
    return feats.new_empty((batch_size, feats.shape[1], nz, nx, ny))  # [B, C, Z, X, Y]


@torch.library.custom_op("bev_ddp::bev_pool_backward", mutates_args=(), device_types="cpu")
def bev_pool_backward_op(grad_out: Tensor, coords: Tensor) -> Tensor:
    """grad_out [B, C, Z, X, Y], coords [N, 4] -> grad_feats [N, C] (zero rows for dropped points)."""
    return _kernels("cpu").bev_pool_backward(grad_out, coords)


@bev_pool_backward_op.register_kernel("cuda")
def _bev_pool_backward_cuda(grad_out: Tensor, coords: Tensor) -> Tensor:
    return _kernels("cuda").bev_pool_backward(grad_out, coords)


@bev_pool_backward_op.register_fake
def _bev_pool_backward_fake(grad_out: Tensor, coords: Tensor) -> Tensor:
    return grad_out.new_empty((coords.shape[0], grad_out.shape[1]))  # [N, C]


def _bev_pool_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])  # coords: the backward recomputes every point's cell


def _bev_pool_grad(ctx, grad_out):
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None
    (coords,) = ctx.saved_tensors
    return bev_pool_backward_op(grad_out.contiguous(), coords), None, None, None, None, None


bev_pool_op.register_autograd(_bev_pool_grad, setup_context=_bev_pool_setup)


# -- ms_deform_attn ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def host_level_table(shapes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Flat ``(h0, w0, h1, w1, ...)`` -> the kernels' CPU int64 spatial_shapes [L, 2] and
    level_start_index [L] (cached per table, read-only)."""
    table = torch.tensor(shapes, dtype=torch.int64).view(-1, 2)  # [L, 2]
    areas = table.prod(1)
    return table, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def flat_levels(shapes: Sequence[tuple[int, int]]) -> list[int]:
    """[(h, w), ...] -> [h0, w0, h1, w1, ...], the ``shapes`` argument of the ops."""
    return [int(v) for hw in shapes for v in hw]


@torch.library.custom_op("bev_ddp::ms_deform_attn", mutates_args=(), device_types="cpu")
def ms_deform_attn_op(value: Tensor, shapes: list[int], sampling_locations: Tensor, attn_weights: Tensor) -> Tensor:
    """value [B, S, H, Dh], flat level table, locations [B, Q, H, L, P, 2], weights [B, Q, H, L, P]
    -> [B, Q, H*Dh] (CPU kernel)."""
    table, starts = host_level_table(tuple(shapes))
    return _kernels("cpu").ms_deform_attn_forward(value, table, starts, sampling_locations, attn_weights)


@ms_deform_attn_op.register_kernel("cuda")
def _ms_deform_attn_cuda(value: Tensor, shapes: list[int], sampling_locations: Tensor, attn_weights: Tensor) -> Tensor:
    table, starts = host_level_table(tuple(shapes))  # host tensors: a launch argument, no copy
    return _kernels("cuda").ms_deform_attn_forward(value, table, starts, sampling_locations, attn_weights)


@ms_deform_attn_op.register_fake
def _ms_deform_attn_fake(value: Tensor, shapes: list[int], sampling_locations: Tensor, attn_weights: Tensor) -> Tensor:
    b, _, h, dh = value.shape
    return value.new_empty((b, sampling_locations.shape[1], h * dh))  # [B, Q, H*Dh]


def _ms_deform_attn_backward(device_type: str, value, shapes, sampling_locations, attn_weights, grad_out,
                             need_grad_value):
    table, starts = host_level_table(tuple(shapes))
    grad_value, grad_loc, grad_attn = _kernels(device_type).ms_deform_attn_backward(
        value, table, starts, sampling_locations, attn_weights, grad_out, need_grad_value=need_grad_value
    )
    return (grad_value if grad_value is not None else value.new_empty(0)), grad_loc, grad_attn


@torch.library.custom_op("bev_ddp::ms_deform_attn_backward", mutates_args=(), device_types="cpu")
def ms_deform_attn_backward_op(value: Tensor, shapes: list[int], sampling_locations: Tensor, attn_weights: Tensor,
                               grad_out: Tensor, need_grad_value: bool) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_value [B, S, H, Dh] or an empty tensor, grad_locations, grad_weights) (CPU kernel)."""
    return _ms_deform_attn_backward("cpu", value, shapes, sampling_locations, attn_weights, grad_out, need_grad_value)


@ms_deform_attn_backward_op.register_kernel("cuda")
def _ms_deform_attn_backward_cuda(value, shapes, sampling_locations, attn_weights, grad_out, need_grad_value):
    return _ms_deform_attn_backward("cuda", value, shapes, sampling_locations, attn_weights, grad_out, need_grad_value)


@ms_deform_attn_backward_op.register_fake
def _ms_deform_attn_backward_fake(value, shapes, sampling_locations, attn_weights, grad_out, need_grad_value):
    grad_value = torch.empty_like(value) if need_grad_value else value.new_empty(0)
    return grad_value, torch.empty_like(sampling_locations), torch.empty_like(attn_weights)


def _ms_deform_attn_setup(ctx, inputs, output) -> None:
    value, shapes, sampling_locations, attn_weights = inputs
    ctx.save_for_backward(value, sampling_locations, attn_weights)
    ctx.shapes = shapes


def _ms_deform_attn_grad(ctx, grad_out):
    needs = ctx.needs_input_grad
    if not (needs[0] or needs[2] or needs[3]):
        return None, None, None, None
    value, sampling_locations, attn_weights = ctx.saved_tensors
    grad_value, grad_loc, grad_attn = ms_deform_attn_backward_op(
        value, ctx.shapes, sampling_locations, attn_weights, grad_out.contiguous(), bool(needs[0])
    )
    return (grad_value if needs[0] else None, None, grad_loc if needs[2] else None, grad_attn if needs[3] else None)


ms_deform_attn_op.register_autograd(_ms_deform_attn_grad, setup_context=_ms_deform_attn_setup)


# -- the backwards are not differentiable ----------------------------------------------------------
def _no_double_backward(name: str):
    def grad(ctx, *grads):
        raise RuntimeError(f"{name} is not differentiable: cannot differentiate twice through it")
    return grad


bev_pool_backward_op.register_autograd(_no_double_backward("bev_pool backward"),
                                       setup_context=lambda ctx, inputs, output: None)
ms_deform_attn_backward_op.register_autograd(_no_double_backward("ms_deform_attn backward"),
                                             setup_context=lambda ctx, inputs, output: None)
