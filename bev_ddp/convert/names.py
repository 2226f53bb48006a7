"""Parameter names of the reference implementations (BEVFusion, DDP) for our BEV model's keys.

:func:`reference_name` maps one key of ``BEVFusionModel.state_dict()`` onto the key the same tensor
has in the authors' model (``encoders.camera.neck...``, ``heads.map...``, DDP's top-level
``transform`` / ``time_mlp`` / ``embedding_table``); the manifests in
``shared/reference/manifests/`` are the oracle (``tests/convert``).  Camera-backbone keys
(``camera.backbone.*``) are not named here: their mapping is the Swin converter's
(:mod:`bev_ddp.convert.swin`).
"""
from __future__ import annotations

import re
from typing import Iterable

from bev_ddp.errors import InputError

BACKBONE_PREFIX = "camera.backbone."  # ours
REFERENCE_BACKBONE_PREFIX = "encoders.camera.backbone."  # theirs

# conv-BN(-ReLU) pairs we keep as Sequential(Sequential(conv, bn, relu), ...) and they flatten
_VT_DOWNSAMPLE = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2.0": "6", "2.1": "7"}
_CLASSIFIER = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6"}
_NECK_MODULE = {"0": "conv", "1": "bn"}
_FFN = {"0": "layers.0.0", "3": "layers.1"}
_NORM = {"norm1": "norms.0", "norm2": "norms.1"}
_TIME_MLP = {"0": "1", "2": "3"}

# (pattern on our key, replacement builder) — the first match wins
_RULES: list[tuple[re.Pattern[str], object]] = [
    (re.compile(r"camera\.neck\.(lateral_convs|fpn_convs)\.(\d+)\.([01])\.(.+)"),
     lambda m: f"encoders.camera.neck.{m[1]}.{m[2]}.{_NECK_MODULE[m[3]]}.{m[4]}"),
    (re.compile(r"camera\.view_transform\.depthnet\.(.+)"), lambda m: f"encoders.camera.vtransform.depthnet.{m[1]}"),
    (re.compile(r"camera\.view_transform\.downsample\.(\d\.\d)\.(.+)"),
     lambda m: f"encoders.camera.vtransform.downsample.{_VT_DOWNSAMPLE[m[1]]}.{m[2]}"),
    (re.compile(r"lidar\.sparse_encoder\.stages\.(\d+)\.(.+)"),
     lambda m: f"encoders.lidar.backbone.encoder_layers.encoder_layer{int(m[1]) + 1}.{m[2]}"),
    (re.compile(r"lidar\.sparse_encoder\.((conv_input|conv_out)\..+)"), lambda m: f"encoders.lidar.backbone.{m[1]}"),
    (re.compile(r"fuser\.fuse\.(.+)"), lambda m: f"fuser.{m[1]}"),
    (re.compile(r"decoder_backbone\.(.+)"), lambda m: f"decoder.backbone.{m[1]}"),
    (re.compile(r"decoder_neck\.(.+)"), lambda m: f"decoder.neck.{m[1]}"),
    (re.compile(r"head\.classifier\.(\d\.\d|2)\.(.+)"), lambda m: f"heads.map.classifier.{_CLASSIFIER[m[1]]}.{m[2]}"),
    # the DDP head
    (re.compile(r"head\.ddp\.decoder\.fuse\.(.+)"), lambda m: f"transform.conv.{m[1]}"),
    (re.compile(r"head\.ddp\.decoder\.time_embedding\.features\.(.+)"), lambda m: f"time_mlp.0.{m[1]}"),
    (re.compile(r"head\.ddp\.decoder\.time_embedding\.mlp\.([02])\.(.+)"),
     lambda m: f"time_mlp.{_TIME_MLP[m[1]]}.{m[2]}"),
    (re.compile(r"head\.ddp\.decoder\.layers\.(\d+)\.attention\.(.+)"),
     lambda m: f"heads.map.encoder.layers.{m[1]}.attentions.0.{m[2]}"),
    (re.compile(r"head\.ddp\.decoder\.layers\.(\d+)\.ffn\.([03])\.(.+)"),
     lambda m: f"heads.map.encoder.layers.{m[1]}.ffns.0.{_FFN[m[2]]}.{m[3]}"),
    (re.compile(r"head\.ddp\.decoder\.layers\.(\d+)\.(norm[12])\.(.+)"),
     lambda m: f"heads.map.encoder.layers.{m[1]}.{_NORM[m[2]]}.{m[3]}"),
    (re.compile(r"head\.ddp\.decoder\.films\.(\d+)\.proj\.1\.(.+)"),
     lambda m: f"heads.map.encoder.layers.{m[1]}.time_mlp.1.{m[2]}"),
    (re.compile(r"head\.ddp\.decoder\.head\.1\.(.+)"), lambda m: f"heads.map.conv_seg.{m[1]}"),
    (re.compile(r"head\.ddp\.label_encoder\.embedding\.(.+)"), lambda m: f"embedding_table.{m[1]}"),
]

# DDP's fuse conv: [256, decoder channels + 256, 1, 1]
FUSE_KEY = "head.ddp.decoder.fuse.weight"


def reference_name(key: str) -> str | None:
    """The authors' name of our ``key`` (None for camera-backbone keys and unknown keys)."""
    if key.startswith(BACKBONE_PREFIX):
        return None
    for pattern, build in _RULES:
        m = pattern.fullmatch(key)
        if m:
            return build(m)  # type: ignore[operator]
    return None


def reference_key_map(keys: Iterable[str]) -> dict[str, str]:
    """{their key: our key} for every non-backbone key of ours; one-to-one or :class:`InputError`."""
    out: dict[str, str] = {}
    unnamed = []
    for key in keys:
        if key.startswith(BACKBONE_PREFIX):
            continue
        ref = reference_name(key)
        if ref is None:
            unnamed.append(key)
        elif ref in out:
            raise InputError(f"two of our keys map onto {ref}: {out[ref]} and {key}")
        else:
            out[ref] = key
    if unnamed:
        raise InputError(f"no reference name for {len(unnamed)} key(s): {', '.join(unnamed[:5])}")
    return out
