"""Multi-scale deformable attention module (Deformable DETR, Zhu et al. 2021, Eq. 3).

Each query predicts, per head h, level l and point p, a 2-D offset from its reference point and
an attention weight (softmax over the L * P samples of a head); the op
:func:`bev_ddp.ops.ms_deform_attn` (compiled kernel when built, pure-PyTorch reference
otherwise) samples the projected values bilinearly there and sums them.

Paper symbols -> names here: M heads -> ``num_heads``, L levels -> ``num_levels``,
K points -> ``num_points``, z_q -> ``query`` (+ ``query_pos``), p_q -> ``reference_points``,
Delta p_mlqk -> ``sampling_offsets`` (in pixels of the level), A_mlqk -> ``attention_weights``,
W'_m -> ``value_proj``, W_m -> ``output_proj``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.ops import ms_deform_attn
from bev_ddp.ops.ms_deform_attn import LevelShapes, LevelStarts, level_table


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention over ``num_levels`` feature maps flattened into one value sequence.

    Args:
        embed_dims: C (divisible by ``num_heads``).  num_heads: M.  num_levels: L.  num_points: K.
    """

    def __init__(self, *, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 1,
                 num_points: int = 4) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise InputError(f"embed_dims {embed_dims} is not divisible by num_heads {num_heads}")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init: offsets start on a ring of M directions, point p at radius p + 1."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], dim=-1)  # [M, 2]
        grid = grid / grid.abs().max(dim=-1, keepdim=True).values
        grid = grid[:, None, None, :].repeat(1, self.num_levels, self.num_points, 1)  # [M, L, K, 2]
        grid *= torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, value: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: LevelShapes, level_start_index: LevelStarts = None,
                query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from ``query`` to ``value``.

        Args:
            query: [B, Q, C].  value: [B, S, C] with S = sum of h*w over levels.
            reference_points: [B, Q, L, 2] normalised (x, y) in [0, 1] per level.
            spatial_shapes: [L, 2] (h, w) as pairs (no device synchronisation) or an int64 tensor.
            level_start_index: [L] int64 tensor or ints, or None (derived from the shapes).
            query_pos: optional [B, Q, C] or [Q, C] positional encoding added to the query.
        Returns:
            [B, Q, C] (no residual; the caller adds it).
        """
        b, q, c = query.shape
        m, lv, k = self.num_heads, self.num_levels, self.num_points
        if value.dim() != 3 or value.shape[0] != b or value.shape[2] != c:
            raise InputError(f"deformable attention value must have shape [{b}, S, {c}], got {tuple(value.shape)}")
        if tuple(reference_points.shape) != (b, q, lv, 2):
            raise InputError(
                f"deformable attention reference_points must have shape {(b, q, lv, 2)}, "
                f"got {tuple(reference_points.shape)}"
            )
        if query_pos is not None:
            query = query + query_pos
        v = self.value_proj(value).view(b, value.shape[1], m, c // m)  # [B, S, M, C/M]
        offsets = self.sampling_offsets(query).view(b, q, m, lv, k, 2)  # [B, Q, M, L, K, 2] in pixels
        weights = self.attention_weights(query).view(b, q, m, lv * k).softmax(-1).view(b, q, m, lv, k)
        shapes = level_table(spatial_shapes, level_start_index, value.shape[1])  # host (h, w) pairs
        # pixels -> normalised units per level, in the reference points' precision (fp32 under autocast)
        offsets = offsets.to(torch.promote_types(offsets.dtype, reference_points.dtype))
        normalised = torch.stack(
            [torch.stack((offsets[:, :, :, i, :, 0] / w, offsets[:, :, :, i, :, 1] / h), dim=-1)
             for i, (h, w) in enumerate(shapes)], dim=3)  # [B, Q, M, L, K, 2]
        locations = reference_points[:, :, None, :, None, :] + normalised
        out = ms_deform_attn(v, shapes, None, locations, weights)  # [B, Q, C]
        return self.output_proj(out)
