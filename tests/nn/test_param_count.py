"""Decoder size follows the paper's Table 5d (256 dims, 1024 FFN, 8 heads, 4 points)."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.diffusion.encoding import ClassEmbeddingEncoder
from bev_ddp.nn import MapDecoder

TABLE_5D = {1: 2.4e6, 2: 3.6e6, 4: 6.0e6, 6: 8.4e6, 12: 15.6e6}  # decoder depth L -> #Param


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(depth: int, cond_channels: int = 256, out_channels: int = 150) -> MapDecoder:
    with torch.device("meta"):  # shapes only, no memory or init cost
        return MapDecoder(cond_channels=cond_channels, map_channels=256, out_channels=out_channels, embed_dims=256,
                          depth=depth, num_heads=8, num_points=4, ffn_dims=1024)


@pytest.mark.parametrize("depth", sorted(TABLE_5D))
def test_decode_head_matches_table_5d_to_its_rounding(depth):
    """ADE20K setting of Table 5: time MLP + L layers + 150-class head + Embedding(151, 256), no fuse conv."""
    decoder = build(depth)
    with torch.device("meta"):
        embedding = ClassEmbeddingEncoder(num_classes=150, dims=256)
    n = count(decoder) - count(decoder.fuse) + count(embedding)
    assert round(n / 1e5) == round(TABLE_5D[depth] / 1e5)  # same value in 0.1M units


@pytest.mark.parametrize("depth", sorted(TABLE_5D))
def test_whole_decoder_with_fuse_conv_within_0_1m(depth):
    """cond 256 + map 256 -> fuse 512 -> 256; the whole decoder (6 BEV classes) within 0.1M."""
    n = count(build(depth, cond_channels=256, out_channels=6))
    assert abs(n - TABLE_5D[depth]) < 0.1e6


def test_layer_and_time_mlp_sizes():
    decoder = build(1)
    assert count(decoder.layers[0]) + count(decoder.films[0]) == 1_207_648
    assert count(decoder.time_embedding) == 1_068_040
    assert count(build(1, cond_channels=512)) - count(build(1, cond_channels=256)) == 256 * 256
