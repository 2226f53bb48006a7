"""One config schema and one builder for the DDP head of every task (BEV, image segmentation, depth).

A task keeps its own encoder, label encoding and objective; the map decoder, the noise schedule
and the sampler settings are the same section everywhere (``model.ddp`` for seg and depth):

=================  ==========================================================================
key                meaning
=================  ==========================================================================
``map_channels``   channels of the encoded (noisy) map; the label encoder's ``dims``
``embed_dims``     width of the deformable-attention layers
``depth``          number of decoder layers L (Table 5d)
``num_heads``      attention heads; ``num_points``: sampling points per head
``ffn_dims``       hidden width of each layer's FFN
``dropout``        dropout in the layers' attention and FFN
``label_scale``    scale of the label encoding (Table 5b: class embedding 0.01, depth 0.1)
``schedule``       ``cosine`` | ``linear`` noise schedule (Table 5c), checked by
                   :class:`bev_ddp.diffusion.schedule.NoiseSchedule`
``td``             time difference of the DDIM sampler (Alg. 2)
``steps``          sampling steps (decoder calls) of a prediction when none are asked for: the one
                   default of ``predict()``, the API, ``bev-ddp eval`` (without ``--steps`` or
                   ``eval.steps``), ``bev-ddp replay`` and ``bev-ddp bench frontier``
``fuse_order``     ``map_first``: fuse conv reads ``cat([map, condition])`` (ours) |
                   ``features_first``: ``cat([condition, map])`` (the DDP authors' BEV head)
``time_conditioning`` per-layer FiLM by the time embedding (the authors' BEV layers have none)
``head_kernel``    kernel of the decoder's output conv (1; the authors' depth head uses 3)
``time_input``     what the decoder's time embedding reads: ``log_snr`` = log-SNR of ``t`` (ours;
                   the authors' segmentation and BEV models) | ``t`` = the time in [0, 1] (the
                   authors' depth model); see :class:`bev_ddp.nn.DDPHead`
``reencode``       how a step's prediction is fed to the next step (and noised in the self-aligned
                   phase): ``threshold`` = discretised, then encoded (Alg. 3, the authors') |
                   ``soft`` = probability-weighted encoding (docs/thin_classes.md)
=================  ==========================================================================

Usage, with the task's own condition, label encoder and objective (the task builds the parts in
the order it wants their weights drawn; the head takes them as arguments)::

    d = cfg.model.ddp
    label_encoder = ClassEmbeddingEncoder(num_classes=K, dims=d.map_channels, scale=d.label_scale)
    decoder = build_map_decoder(d, cond_channels=encoder.out_channels, out_channels=K, key="model.ddp")
    head = build_ddp_head(d, decoder=decoder, label_encoder=label_encoder, objective=CrossEntropyObjective(),
                          key="model.ddp")
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from bev_ddp.diffusion.encoding import REENCODINGS, MapEncoder
from bev_ddp.config import constrained
from bev_ddp.diffusion.sampler import DDIMSampler
from bev_ddp.diffusion.schedule import NoiseSchedule
from bev_ddp.errors import ConfigError, InputError
from bev_ddp.nn.ddp_head import DDPHead
from bev_ddp.nn.map_decoder import MapDecoder


@dataclass
class DDPHeadSchema:
    """Settings of :class:`~bev_ddp.nn.DDPHead` and its :class:`~bev_ddp.nn.MapDecoder` (paper §3)."""

    map_channels: int = 256
    embed_dims: int = 256
    depth: int = 6
    num_heads: int = 8
    num_points: int = 4
    ffn_dims: int = 1024
    dropout: float = 0.0
    label_scale: float = 0.01
    schedule: str = "cosine"  # cosine | linear
    td: float = 1.0
    steps: int = constrained(3, ge=1)  # sampling steps when none are asked for (the paper's 3)
    fuse_order: str = "map_first"  # map_first | features_first
    time_conditioning: bool = True
    head_kernel: int = 1  # output conv kernel (odd); 3 = the DDP authors' depth head
    time_input: str = constrained("log_snr", choices=DDPHead.TIME_INPUTS)  # log_snr | t (the DDP authors' depth model)
    reencode: str = constrained("threshold", choices=REENCODINGS)  # threshold (Alg. 3, authors) | soft


def build_map_decoder(cfg: Any, *, cond_channels: int, out_channels: int, key: str = "model.ddp",
                      fuse_transform: torch.nn.Module | None = None) -> MapDecoder:
    """The map decoder of a :class:`DDPHeadSchema` section ``cfg`` (``key`` names it in errors).

    ``fuse_transform``: optional resampling of the fused map (e.g. the BEV encoder grid → label grid
    when the noisy map lives on the encoder grid); ``None`` keeps the condition's grid.
    """
    try:
        return MapDecoder(cond_channels=cond_channels, map_channels=cfg.map_channels, out_channels=out_channels,
                          embed_dims=cfg.embed_dims, depth=cfg.depth, num_heads=cfg.num_heads,
                          num_points=cfg.num_points, ffn_dims=cfg.ffn_dims, dropout=cfg.dropout,
                          fuse_order=cfg.fuse_order, time_conditioning=bool(cfg.time_conditioning),
                          fuse_transform=fuse_transform,
                          head_kernel=int(getattr(cfg, "head_kernel", 1)))  # sections built without the schema: 1
    except InputError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def build_ddp_head(cfg: Any, *, decoder: MapDecoder, label_encoder: MapEncoder,
                   objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   key: str = "model.ddp") -> DDPHead:
    """DDP head = ``decoder`` + ``label_encoder`` + ``objective`` + the section's sampler
    (:func:`build_sampler`: noise schedule, ``td``), handed to the head, and its default ``steps``.

    Args:
        cfg: a :class:`DDPHeadSchema` section.
        decoder: from :func:`build_map_decoder` on the same section.
        label_encoder: the task's encoding; its ``channels`` must equal ``cfg.map_channels`` and its
            ``out_channels`` the decoder's.
        objective: ``(logits at target size, target) -> scalar``.
        key: where ``cfg`` sits in the config, for error messages.
    """
    try:
        return DDPHead(decoder=decoder, label_encoder=label_encoder, objective=objective, sampler=build_sampler(cfg),
                       time_input=str(getattr(cfg, "time_input", "log_snr")),
                       steps=int(getattr(cfg, "steps", DDPHead.DEFAULT_STEPS)),
                       reencode=str(getattr(cfg, "reencode", "threshold")))
    except InputError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def build_sampler(cfg: Any) -> DDIMSampler:
    """The DDIM sampler of a :class:`DDPHeadSchema` section: its ``schedule`` and ``td`` (Alg. 2)."""
    return DDIMSampler(schedule=NoiseSchedule(name=cfg.schedule), td=float(cfg.td))
