"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3) as a fused op.

For every query q, head h, level l and point p the op samples the head's value map of level l
bilinearly at ``sampling_locations[b, q, h, l, p]`` and sums the samples weighted by
``attn_weights[b, q, h, l, p]``.  Sampling follows ``grid_sample(mode="bilinear",
padding_mode="zeros", align_corners=False)``: a location (x, y) in [0, 1] maps to pixel
coordinates (x * W - 0.5, y * H - 0.5), and taps outside the map contribute zero.

Symbols (paper -> here): M heads -> H, L levels -> L, K points -> P, A_mlqk -> attn_weights,
p_q + delta p_mlqk (normalised) -> sampling_locations, W'_m x -> value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.ops import _extension
from bev_ddp.ops._checks import check_same_device, check_tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_ms_deform_attn_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attn_weights: torch.Tensor,
) -> list[tuple[int, int]]:
    """Validate ``ms_deform_attn`` inputs; returns the level shapes as a list of (h, w).

    Raises InputError for wrong types, dtypes or shapes, negative level sizes, level sizes that do
    not add up to ``value``'s S, and a ``level_start_index`` that is not their running sum.
    The three float inputs may differ in dtype (e.g. float16 values under autocast with float32
    locations); the ops compute in their promoted dtype.
    """
    check_tensor("ms_deform_attn value", value, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor("ms_deform_attn spatial_shapes", spatial_shapes, ndim=2, dtypes=(torch.int64,))
    check_tensor("ms_deform_attn level_start_index", level_start_index, ndim=1, dtypes=(torch.int64,))
    check_tensor("ms_deform_attn sampling_locations", sampling_locations, ndim=6, dtypes=FLOAT_DTYPES)
    check_tensor("ms_deform_attn attn_weights", attn_weights, ndim=5, dtypes=FLOAT_DTYPES)
    check_same_device(value=value, spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                      sampling_locations=sampling_locations, attn_weights=attn_weights)
    b, s, h, _ = value.shape
    if spatial_shapes.shape[1] != 2 or spatial_shapes.shape[0] == 0:
        raise InputError(f"ms_deform_attn spatial_shapes must have shape [L, 2] with L >= 1, got {tuple(spatial_shapes.shape)}")
    num_levels = spatial_shapes.shape[0]
    if level_start_index.shape[0] != num_levels:
        raise InputError(
            f"ms_deform_attn level_start_index must have shape [{num_levels}], got {tuple(level_start_index.shape)}"
        )
    loc = sampling_locations.shape
    if loc[0] != b or loc[2] != h or loc[3] != num_levels or loc[5] != 2:
        raise InputError(
            f"ms_deform_attn sampling_locations must have shape [B={b}, Q, H={h}, L={num_levels}, P, 2], got {tuple(loc)}"
        )
    if tuple(attn_weights.shape) != tuple(loc[:5]):
        raise InputError(
            f"ms_deform_attn attn_weights must have shape {tuple(loc[:5])} (sampling_locations without the last "
            f"axis), got {tuple(attn_weights.shape)}"
        )
    shapes = [(int(hh), int(ww)) for hh, ww in spatial_shapes.tolist()]
    if any(hh <= 0 or ww <= 0 for hh, ww in shapes):
        raise InputError(f"ms_deform_attn spatial_shapes must be positive, got {shapes}")
    starts, total = [], 0
    for hh, ww in shapes:
        starts.append(total)
        total += hh * ww
    if total != s:
        raise InputError(f"ms_deform_attn spatial_shapes {shapes} cover {total} positions but value has S={s}")
    if level_start_index.tolist() != starts:
        raise InputError(
            f"ms_deform_attn level_start_index must be {starts} for spatial_shapes {shapes}, got {level_start_index.tolist()}"
        )
    return shapes


def _promote(value, sampling_locations, attn_weights):
    """Cast the three float inputs to their common dtype (no copy when they already share it)."""
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attn_weights.dtype)
    return value.to(dtype), sampling_locations.to(dtype), attn_weights.to(dtype)


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attn_weights: torch.Tensor,
) -> torch.Tensor:
    """Pure-PyTorch multi-scale deformable attention via ``F.grid_sample``.

    Args:
        value: [B, S, H, Dh] per-head values of all levels, flattened row-major per level.
        spatial_shapes: [L, 2] int64 (h, w) of each level; sum of h*w equals S.
        level_start_index: [L] int64 offset of each level in S.
        sampling_locations: [B, Q, H, L, P, 2] normalised (x, y) in [0, 1] (outside -> zeros).
        attn_weights: [B, Q, H, L, P] weights of the samples (usually softmax over L*P).

    Returns:
        [B, Q, H*Dh] attended values (heads concatenated).
    """
    shapes = check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations, attn_weights)
    value, sampling_locations, attn_weights = _promote(value, sampling_locations, attn_weights)
    b, _, h, dh = value.shape
    _, q, _, num_levels, p, _ = sampling_locations.shape
    value_levels = value.split([hh * ww for hh, ww in shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for level, (hh, ww) in enumerate(shapes):
        v = value_levels[level].flatten(2).transpose(1, 2).reshape(b * h, dh, hh, ww)  # [B*H, Dh, h, w]
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B*H, Q, P, 2]
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))  # [B*H, Dh, Q, P]
    samples = torch.stack(sampled, dim=-2).flatten(-2)  # [B*H, Dh, Q, L*P]
    weights = attn_weights.transpose(1, 2).reshape(b * h, 1, q, num_levels * p)  # [B*H, 1, Q, L*P]
    out = (samples * weights).sum(-1).view(b, h * dh, q)  # [B, H*Dh, Q]
    return out.transpose(1, 2).contiguous()  # [B, Q, H*Dh]


class MSDeformAttnFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled forward/backward kernels."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attn_weights, module):  # type: ignore[override]
        out = module.ms_deform_attn_forward(value, spatial_shapes, level_start_index, sampling_locations, attn_weights)
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attn_weights)
        ctx.module = module
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        value, spatial_shapes, level_start_index, sampling_locations, attn_weights = ctx.saved_tensors
        grad_value, grad_loc, grad_attn = ctx.module.ms_deform_attn_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attn_weights, grad_out.contiguous()
        )
        needs = ctx.needs_input_grad
        return (
            grad_value if needs[0] else None,
            None,
            None,
            grad_loc if needs[3] else None,
            grad_attn if needs[4] else None,
            None,
        )


def _kernel_module(device: torch.device):
    module = _extension.load(device.type)
    if module is None or not hasattr(module, "ms_deform_attn_forward"):
        return None
    return module


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attn_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention; compiled kernel when built, reference otherwise.

    Shapes as in :func:`ms_deform_attn_reference`: value [B, S, H, Dh], spatial_shapes [L, 2],
    level_start_index [L], sampling_locations [B, Q, H, L, P, 2] in [0, 1] (x, y),
    attn_weights [B, Q, H, L, P] -> [B, Q, H*Dh] in the promoted dtype of the three float inputs.
    The kernels take float32, float64, float16 and bfloat16 (the last two computed in float32).
    """
    check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations, attn_weights)
    value, sampling_locations, attn_weights = _promote(value, sampling_locations, attn_weights)
    module = _kernel_module(value.device)
    if module is None:
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attn_weights)
    return MSDeformAttnFunction.apply(
        value.contiguous(),
        spatial_shapes.contiguous(),
        level_start_index.contiguous(),
        sampling_locations.contiguous(),
        attn_weights.contiguous(),
        module,
    )


class MSDeformAttnSampler(nn.Module):
    """``nn.Module`` form of :func:`ms_deform_attn` (no weights; the projections live in the caller)."""

    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attn_weights) -> torch.Tensor:
        """value [B,S,H,Dh], ..., attn_weights [B,Q,H,L,P] -> [B, Q, H*Dh]."""
        return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attn_weights)
