"""BEVFusion / DDP state dicts → our BEV model's state dict.

Keys are renamed by :mod:`bev_ddp.convert.names`; tensors are transformed where the layouts
differ: spconv 1.x sparse-conv weights (:mod:`bev_ddp.convert.spconv`), DDP's fuse conv (their
input columns are ``[decoder features, map embedding]``; ours ``[map, features]`` unless the target
uses ``fuse_order: features_first``), and mmdet Swin keys (``encoders.camera.backbone.*``, by
:func:`bev_ddp.convert.swin.convert_swin_state_dict`).  BatchNorm buffers, ``num_batches_tracked``
included, are copied like parameters.  :data:`DROPPED_KEYS` carry no learned state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from bev_ddp.convert.names import BACKBONE_PREFIX, FUSE_KEY, REFERENCE_BACKBONE_PREFIX, reference_key_map
from bev_ddp.convert.spconv import spconv1_to_spconv2
from bev_ddp.convert.swin import convert_swin_state_dict
from bev_ddp.errors import InputError

# BEVFusion's LSS keeps its voxel size / origin / count and the frustum as frozen nn.Parameters:
# geometry recomputed from the config here (``LSSTransform``), not learned
DROPPED_KEYS = (
    "encoders.camera.vtransform.dx",
    "encoders.camera.vtransform.bx",
    "encoders.camera.vtransform.nx",
    "encoders.camera.vtransform.frustum",
)


@dataclass
class Conversion:
    """Result of :func:`convert_state_dict`: our ``state`` and what happened to each source key."""

    state: dict[str, torch.Tensor]
    mapped: list[str] = field(default_factory=list)  # copied under a new name
    transformed: list[str] = field(default_factory=list)  # "<key>: <how>"
    dropped: list[str] = field(default_factory=list)


def _names(keys: list[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _convert_backbone(src: Mapping[str, torch.Tensor], out: Conversion) -> None:
    sub = {k[len(REFERENCE_BACKBONE_PREFIX):]: v for k, v in src.items() if k.startswith(REFERENCE_BACKBONE_PREFIX)}
    if not sub:
        return
    converted, notes = convert_swin_state_dict(sub)
    for key, value in converted.items():
        out.state[BACKBONE_PREFIX + key] = value
    out.transformed.extend(f"{REFERENCE_BACKBONE_PREFIX}{note}" for note in notes)
    out.mapped.extend(REFERENCE_BACKBONE_PREFIX + k for k in sub)


def convert_state_dict(src: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *,
                       fuse_order: str = "map_first") -> Conversion:
    """Map ``src`` (BEVFusion or DDP keys) onto the keys and shapes of ``target`` (our model's
    ``state_dict()``).

    Raises:
        InputError: naming the source keys that are neither mapped nor dropped, the reference
            keys the source lacks, or tensors whose shapes do not fit.
    """
    key_map = reference_key_map(target.keys())  # their key -> our key
    out = Conversion(state={})
    has_backbone = any(k.startswith(BACKBONE_PREFIX) for k in target)
    unmapped = [k for k in src if k not in key_map and k not in DROPPED_KEYS
                and not (has_backbone and k.startswith(REFERENCE_BACKBONE_PREFIX))]
    if unmapped:
        raise InputError(f"{len(unmapped)} source tensor(s) map onto nothing in the target model: {_names(unmapped)}")
    missing = [ref for ref in key_map if ref not in src]
    if missing:
        raise InputError(f"the source lacks {len(missing)} tensor(s) of the target model: {_names(missing)}")
    _convert_backbone(src, out)
    bad_shapes = []
    for key, value in src.items():
        if key in DROPPED_KEYS:
            out.dropped.append(key)
            continue
        if key.startswith(REFERENCE_BACKBONE_PREFIX):
            continue
        ours = key_map[key]
        if value.dim() == 5 and ours.startswith("lidar.sparse_encoder."):
            value = spconv1_to_spconv2(value)
            out.transformed.append(f"{key}: spconv 1.x [k0,k1,k2,Cin,Cout] -> spconv 2.x [Cout,k0,k1,k2,Cin]")
        elif ours == FUSE_KEY and fuse_order == "map_first":
            map_channels = target["head.ddp.label_encoder.embedding.weight"].shape[1]
            features = value.shape[1] - map_channels
            value = torch.cat([value[:, features:], value[:, :features]], dim=1)  # [map, features]
            out.transformed.append(f"{key}: input columns [features, map] -> [map, features]")
        else:
            out.mapped.append(key)
        if tuple(value.shape) != tuple(target[ours].shape):
            bad_shapes.append(f"{key} {tuple(value.shape)} vs {ours} {tuple(target[ours].shape)}")
        out.state[ours] = value
    if bad_shapes:
        raise InputError(f"shape mismatch for {len(bad_shapes)} tensor(s): {_names(bad_shapes, 4)}")
    not_filled = [k for k in target if k not in out.state]
    if not_filled:
        raise InputError(f"the converted checkpoint lacks {len(not_filled)} key(s) of the target model: "
                         f"{_names(not_filled)}")
    return out
