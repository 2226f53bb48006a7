"""Tiny decoders shared by the nn tests (imported by name; pytest puts this folder on sys.path)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bev_ddp.diffusion.encoding import ClassEmbeddingEncoder
from bev_ddp.nn import DDPHead, MapDecoder


def tiny_decoder(cond_channels=6, map_channels=8, out_channels=3, depth=2, seed=0) -> MapDecoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MapDecoder(cond_channels=cond_channels, map_channels=map_channels, out_channels=out_channels,
                          embed_dims=16, depth=depth, num_heads=2, num_points=2, ffn_dims=32)


def ce(logits, target):
    return F.cross_entropy(logits, target, ignore_index=255)


def tiny_seg_head(seed=0) -> DDPHead:
    """3-class single-label head with a class embedding of 8 dims on a 6-channel condition."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        encoder = ClassEmbeddingEncoder(num_classes=3, dims=8, scale=0.01)
    return DDPHead(decoder=tiny_decoder(seed=seed), label_encoder=encoder, objective=ce)
