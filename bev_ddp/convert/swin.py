"""Swin-T weights from mmdet / mmseg, the official release or timm → a bev_ddp ``mmdet_layout`` Swin.

The mapping itself lives beside the backbone (:mod:`bev_ddp.nn.backbone_weights`), because the
config's ``backbone_checkpoint`` loads through it too; this module is the converter's entry point.
"""
from __future__ import annotations

from typing import Mapping

import torch

from bev_ddp.nn.backbone_weights import swin_to_backbone_state_dict


def convert_swin_state_dict(src: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a Swin state dict onto the keys of a ``TimmBackbone`` built with ``mmdet_layout=True``.

    Args:
        src: backbone-relative keys in mmdet (``patch_embed.projection``, ``stages.N.blocks.M.attn.w_msa.*``,
            ``ffn.layers.0.0``, ``stages.N.downsample.*``, ``norm1..norm3``), official Swin
            (``layers.N.blocks.M.attn.qkv``, ``patch_embed.proj``, ``layers.N.downsample``, ``norm``, ``head``)
            or timm naming; detected from the keys.

    Returns:
        ``(state, notes)``: ``state`` keyed like ``TimmBackbone.state_dict()`` (``model.layers_N...``,
        ``out_norms.{i}``), ``notes`` the human-readable list of what was renamed, permuted and dropped.

    Raises:
        InputError: a key that maps to no backbone tensor (named), or no Swin layout recognised.
    """
    return swin_to_backbone_state_dict(src)
