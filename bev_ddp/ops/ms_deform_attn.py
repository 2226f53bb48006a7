"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3) as a fused op.

For every query q, head h, level l and point p the op samples the head's value map of level l
bilinearly at ``sampling_locations[b, q, h, l, p]`` and sums the samples weighted by
``attn_weights[b, q, h, l, p]``.  Sampling follows ``grid_sample(mode="bilinear",
padding_mode="zeros", align_corners=False)``: a location (x, y) in [0, 1] maps to pixel
coordinates (x * W - 0.5, y * H - 0.5), and taps outside the map contribute zero.

Symbols (paper -> here): M heads -> H, L levels -> L, K points -> P, A_mlqk -> attn_weights,
p_q + delta p_mlqk (normalised) -> sampling_locations, W'_m x -> value.

The level table (``spatial_shapes``, ``level_start_index``) is host data: pass it as a list of
``(h, w)`` pairs (and a list of starts, or None to derive them), or as int64 tensors.  A table held
in CUDA tensors is read back once per call, which costs a device synchronisation; host lists and
CPU tensors cost none.  The kernels receive the table on the host (the CUDA kernels as a launch
argument), so a call never copies it to the device either.  The kernels are the custom op
``torch.ops.bev_ddp.ms_deform_attn`` (:mod:`bev_ddp.ops._library`; the table is a list of ints
there), which ``torch.compile`` and ``torch.export`` trace as one node; inside
:func:`bev_ddp.ops.reference_ops` (ONNX export) the ``grid_sample`` reference runs instead.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.ops import _extension
from bev_ddp.ops._library import flat_levels, ms_deform_attn_op
from bev_ddp.ops._checks import check_same_device, check_tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
MAX_LEVELS = 16  # the compiled kernels' level-table bound (kMaxLevels in ops/ms_deform_attn/ms_deform_attn.h)
LevelShapes = torch.Tensor | Sequence[Sequence[int]]  # [L, 2] (h, w): int64 tensor or pairs
LevelStarts = torch.Tensor | Sequence[int] | None  # [L]: int64 tensor, ints, or None (derived)


def _host_list(name: str, table: LevelShapes | LevelStarts, ndim: int) -> list:
    """An int64 tensor (any device; a CUDA one is read back once) or a nested sequence -> a host list."""
    if isinstance(table, torch.Tensor):
        check_tensor(f"ms_deform_attn {name}", table, ndim=ndim, dtypes=(torch.int64,))
        return table.tolist()
    try:
        rows = [tuple(int(v) for v in row) for row in table] if ndim == 2 else [int(v) for v in table]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"ms_deform_attn {name} must be an int64 tensor or a list of ints/pairs, got {table!r}") from None
    return rows


def level_table(spatial_shapes: LevelShapes, level_start_index: LevelStarts, num_values: int) -> list[tuple[int, int]]:
    """Check the level table against ``value``'s S on the host; returns the (h, w) list.

    Args:
        spatial_shapes: [L, 2] (h, w) per level, int64 tensor or pairs.
        level_start_index: [L] start of each level in S (int64 tensor or ints), or None.
        num_values: S.
    """
    shapes = _host_list("spatial_shapes", spatial_shapes, ndim=2)
    if not shapes or any(len(row) != 2 for row in shapes):
        got = tuple(spatial_shapes.shape) if isinstance(spatial_shapes, torch.Tensor) else shapes
        raise InputError(f"ms_deform_attn spatial_shapes must have shape [L, 2] with L >= 1, got {got}")
    if len(shapes) > MAX_LEVELS:
        raise InputError(f"ms_deform_attn supports at most {MAX_LEVELS} levels, got {len(shapes)}")
    shapes = [(int(hh), int(ww)) for hh, ww in shapes]
    if any(hh <= 0 or ww <= 0 for hh, ww in shapes):
        raise InputError(f"ms_deform_attn spatial_shapes must be positive, got {shapes}")
    starts, total = [], 0
    for hh, ww in shapes:
        starts.append(total)
        total += hh * ww
    if total != num_values:
        raise InputError(f"ms_deform_attn spatial_shapes {shapes} cover {total} positions but value has S={num_values}")
    if level_start_index is not None:
        given = _host_list("level_start_index", level_start_index, ndim=1)
        if len(given) != len(shapes):
            got = tuple(level_start_index.shape) if isinstance(level_start_index, torch.Tensor) else given
            raise InputError(f"ms_deform_attn level_start_index must have shape [{len(shapes)}], got {got}")
        if given != starts:
            raise InputError(
                f"ms_deform_attn level_start_index must be {starts} for spatial_shapes {shapes}, got {given}"
            )
    return shapes


def check_ms_deform_attn_inputs(
    value: torch.Tensor,
    spatial_shapes: LevelShapes,
    level_start_index: LevelStarts,
    sampling_locations: torch.Tensor,
    attn_weights: torch.Tensor,
) -> list[tuple[int, int]]:
    """Validate ``ms_deform_attn`` inputs; returns the level shapes as a list of (h, w).

    Raises InputError for wrong types, dtypes or shapes, negative level sizes, level sizes that do
    not add up to ``value``'s S, and a ``level_start_index`` that is not their running sum.
    The three float inputs may differ in dtype (e.g. float16 values under autocast with float32
    locations); the ops compute in their promoted dtype.  Only a level table held in CUDA tensors
    needs a device synchronisation (see the module docstring).
    """
    check_tensor("ms_deform_attn value", value, ndim=4, dtypes=FLOAT_DTYPES)
    check_tensor("ms_deform_attn sampling_locations", sampling_locations, ndim=6, dtypes=FLOAT_DTYPES)
    check_tensor("ms_deform_attn attn_weights", attn_weights, ndim=5, dtypes=FLOAT_DTYPES)
    check_same_device(value=value, sampling_locations=sampling_locations, attn_weights=attn_weights)
    shapes = level_table(spatial_shapes, level_start_index, value.shape[1])
    b, _, h, _ = value.shape
    num_levels = len(shapes)
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
    return shapes


def _promote(value, sampling_locations, attn_weights):
    """Cast the three float inputs to their common dtype (no copy when they already share it)."""
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attn_weights.dtype)
    return value.to(dtype), sampling_locations.to(dtype), attn_weights.to(dtype)


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: LevelShapes,
    level_start_index: LevelStarts,
    sampling_locations: torch.Tensor,
    attn_weights: torch.Tensor,
) -> torch.Tensor:
    """Pure-PyTorch multi-scale deformable attention via ``F.grid_sample``.

    Args:
        value: [B, S, H, Dh] per-head values of all levels, flattened row-major per level.
        spatial_shapes: [L, 2] (h, w) of each level (int64 tensor or pairs); sum of h*w equals S.
        level_start_index: [L] offset of each level in S (int64 tensor or ints), or None.
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


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: LevelShapes,
    level_start_index: LevelStarts,
    sampling_locations: torch.Tensor,
    attn_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention; compiled kernel when built, reference otherwise.

    Shapes as in :func:`ms_deform_attn_reference`: value [B, S, H, Dh], spatial_shapes [L, 2]
    (tensor or (h, w) pairs), level_start_index [L] or None, sampling_locations [B, Q, H, L, P, 2] in [0, 1] (x, y),
    attn_weights [B, Q, H, L, P] -> [B, Q, H*Dh] in the promoted dtype of the three float inputs.
    The kernels take float32, float64, float16 and bfloat16 (the last two computed in float32).
    """
    shapes = check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations, attn_weights)
    value, sampling_locations, attn_weights = _promote(value, sampling_locations, attn_weights)
    if not _extension.has_kernel(value.device.type, "ms_deform_attn_forward"):
        return ms_deform_attn_reference(value, shapes, None, sampling_locations, attn_weights)
    return ms_deform_attn_op(  # torch.ops.bev_ddp.ms_deform_attn: the level table as host ints
        value.contiguous(), flat_levels(shapes), sampling_locations.contiguous(), attn_weights.contiguous()
    )


class MSDeformAttnSampler(nn.Module):
    """``nn.Module`` form of :func:`ms_deform_attn` (no weights; the projections live in the caller)."""

    def forward(self, value, spatial_shapes, level_start_index, sampling_locations, attn_weights) -> torch.Tensor:
        """value [B,S,H,Dh], ..., attn_weights [B,Q,H,L,P] -> [B, Q, H*Dh]."""
        return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attn_weights)
