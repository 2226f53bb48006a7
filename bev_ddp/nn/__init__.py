"""Neural network modules of DDP: deformable attention, time conditioning, map decoder, DDP head.

``fpn`` (image-encoder neck) lives here too but is imported from its module directly.
"""
from __future__ import annotations

from bev_ddp.nn.ddp_head import DDPHead, DDPOutput
from bev_ddp.nn.deformable_attention import MultiScaleDeformableAttention
from bev_ddp.nn.map_decoder import DeformableEncoderLayer, MapDecoder
from bev_ddp.nn.positional_encoding import SinePositionalEncoding
from bev_ddp.nn.time_embedding import LearnedSinusoidalEmbedding, TimeEmbedding, TimeFiLM

__all__ = [
    "DDPHead",
    "DDPOutput",
    "DeformableEncoderLayer",
    "LearnedSinusoidalEmbedding",
    "MapDecoder",
    "MultiScaleDeformableAttention",
    "SinePositionalEncoding",
    "TimeEmbedding",
    "TimeFiLM",
]
