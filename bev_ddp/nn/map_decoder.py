"""DDP map decoder (Ji et al. 2023, "DDP: Diffusion Model for Dense Visual Prediction", Sec. 3.2).

One call of :class:`MapDecoder` is one denoising step ``(cond, x_t, time_input) -> logits``, where
``time_input`` [B] is the noise level of ``x_t`` as the time embedding reads it: log-SNR by default,
or the time ``t`` in [0, 1] (chosen by :class:`~bev_ddp.nn.DDPHead`'s ``time_input``):

1. fuse: concat(noisy map x_t, condition) -> 1x1 conv -> ``embed_dims`` channels;
2. L post-norm deformable-attention encoder layers over the H*W pixels (self-attention with
   pixel-centre reference points, 1 level, sine positional encoding), each followed by FiLM
   modulation with the time embedding;
3. head: 1x1 conv -> ``out_channels`` logits.

Parameter count (Table 5d: 2.4M / 3.6M / 6.0M / 8.4M / 15.6M at L = 1 / 2 / 4 / 6 / 12 with
256 dims, 1024 FFN): one layer (deformable attention 156,256 + FFN 525,568 + two LayerNorms
1,024 + FiLM 524,800) has 1,207,648 parameters, the time MLP 1,068,040.  Table 5d is matched
to its 0.1M rounding for every L by the ADE20K decode head of the paper's Table 5 setting:
time MLP + layers + head conv (256 -> 150) + the class embedding (151 x 256), with the fuse
conv counted outside the head.  Counting the whole decoder including the fuse conv, the
configuration that matches within 0.1M is ``cond_channels = map_channels = 256`` (fuse
512 -> 256); a 512-channel condition (BEV) adds 65,536 parameters.  ``tests/nn`` checks both.
"""
from __future__ import annotations

import torch
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn.deformable_attention import MultiScaleDeformableAttention
from bev_ddp.nn.positional_encoding import SinePositionalEncoding
from bev_ddp.nn.time_embedding import TimeEmbedding, TimeFiLM


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------
class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention layer: ``norm1(q + attn(q)); norm2(q + ffn(q))``.

    Args:
        attention: the deformable attention module (defines ``embed_dims``).
        ffn_dims: hidden width of the GELU feed-forward network.
        dropout: dropout after attention and in the FFN.
    """

    def __init__(self, *, attention: MultiScaleDeformableAttention, ffn_dims: int, dropout: float = 0.0) -> None:
        super().__init__()
        dims = attention.embed_dims
        self.attention = attention
        self.norm1 = nn.LayerNorm(dims)
        self.ffn = nn.Sequential(
            nn.Linear(dims, ffn_dims), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dims, dims), nn.Dropout(dropout)
        )
        self.norm2 = nn.LayerNorm(dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query [B, Q, C], query_pos [Q, C], reference_points [B, Q, L, 2], spatial_shapes L (h, w) -> [B, Q, C]."""
        attended = self.attention(query, query, reference_points, spatial_shapes, None, query_pos=query_pos)
        query = self.norm1(query + self.dropout(attended))
        return self.norm2(query + self.ffn(query))


def pixel_centres(height: int, width: int, device: torch.device | str) -> torch.Tensor:
    """Normalised (x, y) pixel centres in (0, 1), [H*W, 2], row-major over (y, x)."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
    return torch.stack([grid_x, grid_y], dim=-1).reshape(height * width, 2)  # [H*W, 2]


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
class MapDecoder(nn.Module):
    """The DDP map decoder; ``forward`` is one denoising step.

    Args:
        cond_channels: channels of the condition map (256 for image seg, 512 for BEVFusion).
        map_channels: channels of the encoded noisy map (the label encoder's ``channels``).
        embed_dims: decoder width (256).  depth: number of layers L (6 in the paper's seg setting).
        num_heads, num_points: deformable attention heads and sampling points (8, 4).
        ffn_dims: FFN hidden width (1024).  out_channels: output logits (classes, or 1 for depth).
        time_dims: time embedding width (default ``4 * embed_dims`` = 1024).
        freq_dims: learned sinusoidal frequencies x 2 (16 -> 8 frequencies).
        dropout: dropout in the layers and before the head (0 by default).
        fuse_order: ``"map_first"`` fuses ``cat([x_t, cond])``; ``"features_first"`` fuses
            ``cat([cond, x_t])`` (the DDP authors' BEV head).
        time_conditioning: per-layer FiLM by the time embedding; False drops the FiLMs (the DDP
            authors' BEV layers ignore time; the time embedding is kept, unused, for their weights).
        fuse_transform: optional spatial resampling of the fused map before the layers (the DDP
            authors run the layers on the label grid after fusing on the encoder grid); the
            output then has the transform's size instead of ``x_t``'s.
        head_kernel: kernel size of the output conv, odd (1 by default; 3 is the DDP authors' depth head,
            zero-padded so the output keeps the input's H, W).
    """

    FUSE_ORDERS = ("map_first", "features_first")

    def __init__(self, *, cond_channels: int, map_channels: int, out_channels: int, embed_dims: int = 256,
                 depth: int = 6, num_heads: int = 8, num_points: int = 4, ffn_dims: int = 1024,
                 time_dims: int | None = None, freq_dims: int = 16, dropout: float = 0.0,
                 fuse_order: str = "map_first", time_conditioning: bool = True,
                 fuse_transform: nn.Module | None = None, head_kernel: int = 1) -> None:
        super().__init__()
        for name, value in (("cond_channels", cond_channels), ("map_channels", map_channels),
                            ("out_channels", out_channels), ("embed_dims", embed_dims), ("depth", depth),
                            ("num_heads", num_heads), ("num_points", num_points), ("ffn_dims", ffn_dims)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"MapDecoder {name} must be a positive integer, got {value!r}")
        if isinstance(head_kernel, bool) or not isinstance(head_kernel, int) or head_kernel < 1 or head_kernel % 2 == 0:
            raise InputError(f"MapDecoder head_kernel must be a positive odd integer, got {head_kernel!r}")
        if embed_dims % 2:
            raise InputError(f"MapDecoder embed_dims must be even (sine positional encoding), got {embed_dims}")
        if fuse_order not in self.FUSE_ORDERS:
            raise InputError(f"MapDecoder fuse_order must be one of {self.FUSE_ORDERS}, got {fuse_order!r}")
        time_dims = 4 * embed_dims if time_dims is None else time_dims
        self.fuse_order = fuse_order
        self.time_conditioning = bool(time_conditioning)
        self.fuse_transform = fuse_transform
        self.cond_channels = cond_channels
        self.map_channels = map_channels
        self.out_channels = out_channels
        self.embed_dims = embed_dims
        self.depth = depth

        self.fuse = nn.Conv2d(map_channels + cond_channels, embed_dims, kernel_size=1)
        self.positional_encoding = SinePositionalEncoding(num_feats=embed_dims // 2)
        self.time_embedding = TimeEmbedding(time_dims=time_dims, freq_dims=freq_dims)
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(
                attention=MultiScaleDeformableAttention(embed_dims=embed_dims, num_heads=num_heads, num_levels=1,
                                                       num_points=num_points),
                ffn_dims=ffn_dims,
                dropout=dropout,
            )
            for _ in range(depth)
        )
        self.films = nn.ModuleList(TimeFiLM(time_dims=time_dims, channels=embed_dims)
                                   for _ in range(depth if self.time_conditioning else 0))
        self.head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(embed_dims, out_channels, kernel_size=head_kernel,
                                                                   padding=head_kernel // 2))

    def check_inputs(self, cond: torch.Tensor, x_t: torch.Tensor, time_input: torch.Tensor) -> None:
        """Shape and dtype checks (values are checked once per call by :class:`DDPHead`)."""
        for name, x, channels in (("cond", cond, self.cond_channels), ("x_t", x_t, self.map_channels)):
            if not isinstance(x, torch.Tensor):
                raise InputError(f"MapDecoder {name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != 4 or x.shape[1] != channels:
                raise InputError(f"MapDecoder {name} must have shape [B, {channels}, H, W], got {tuple(x.shape)}")
            if not x.is_floating_point():
                raise InputError(f"MapDecoder {name} must be floating point, got {x.dtype}")
        if x_t.shape[0] != cond.shape[0] or x_t.shape[-2:] != cond.shape[-2:]:
            raise InputError(f"MapDecoder x_t {tuple(x_t.shape)} must match cond {tuple(cond.shape)} in B, H, W")
        batch = cond.shape[0]
        t = time_input
        if not isinstance(t, torch.Tensor) or t.shape != (batch,) or not t.is_floating_point():
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InputError(f"MapDecoder time_input must be a float tensor of shape [{cond.shape[0]}], got {got}")

    def forward(self, cond: torch.Tensor, x_t: torch.Tensor, time_input: torch.Tensor) -> torch.Tensor:
        """One denoising step.

        Args:
            cond: [B, cond_channels, H, W] condition features.
            x_t: [B, map_channels, H, W] noisy encoded map.
            time_input: [B] noise level of ``x_t`` as the time embedding reads it: log-SNR
                (about -19..12 for the cosine schedule) or the time ``t`` in [0, 1] (1 = pure noise).
        Returns:
            [B, out_channels, H, W] prediction of the clean map (logits); with a
            ``fuse_transform``, at its output size.
        """
        self.check_inputs(cond, x_t, time_input)
        b = cond.shape[0]
        pair = [x_t.to(cond.dtype), cond] if self.fuse_order == "map_first" else [cond, x_t.to(cond.dtype)]
        x = self.fuse(torch.cat(pair, dim=1))  # [B, E, H, W]
        if self.fuse_transform is not None:
            x = self.fuse_transform(x)  # [B, E, H', W']
        h, w = x.shape[-2:]
        query = x.flatten(2).transpose(1, 2)  # [B, H*W, E]
        # positions, reference points and the time embedding stay float32 under autocast: a 16-bit
        # time input or pixel centre would be rounded before the sines (no host data is copied here)
        query_pos = self.positional_encoding(h, w, device=x.device)  # [H*W, E] float32
        reference_points = pixel_centres(h, w, x.device)[None, :, None, :].expand(b, -1, 1, -1)  # [B, H*W, 1, 2] float32
        time_emb = self.time_embedding(time_input) if self.time_conditioning else None  # [B, T] float32
        for i, layer in enumerate(self.layers):
            query = layer(query, query_pos, reference_points, [(h, w)])
            if time_emb is not None:
                query = self.films[i](query, time_emb)  # [B, H*W, E]
        x = query.transpose(1, 2).reshape(b, self.embed_dims, h, w)  # [B, E, H, W]
        return self.head(x)  # [B, out_channels, H, W]
