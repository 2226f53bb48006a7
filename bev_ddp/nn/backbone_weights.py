"""Pretrained backbone files in other libraries' key layouts → the keys of a :class:`TimmBackbone`.

A :class:`~bev_ddp.nn.backbone.TimmBackbone` state dict holds ``model.<name>`` (timm's
``features_only`` wrapper flattens ``layers.0`` into ``layers_0``, ``stem.0`` into ``stem_0``) and,
with ``mmdet_layout``, ``out_norms.<stage>``.  Accepted files, detected from their keys:

========================  ===========================================================================
Swin, mmdet / mmseg       ``patch_embed.projection``, ``stages.N.blocks.M.attn.w_msa.*``,
                          ``ffn.layers.{0.0,1}``, ``stages.N.downsample.*`` (end of stage N, 2×2
                          neighbourhood in ``nn.Unfold`` order), output norms ``norm{i}``
Swin, official            ``patch_embed.proj``, ``layers.N.blocks.M.attn.qkv``, ``mlp.fc1``,
                          ``layers.N.downsample`` (end of stage N), ``norm``, ``head`` (the nuImages
                          Swin-T that BEVFusion starts from; its ``norm{i}`` are kept)
Swin, timm                ``layers.N.downsample`` at the start of stage N, ``head.fc``
ConvNeXt, timm            ``stem.0``, ``stages.N.blocks.M.conv_dw``, ``head.*``
ConvNeXt, official (FB)   ``downsample_layers``, ``stages.N.M.dwconv`` (timm's filter function)
ConvNeXt, mmcls / mmseg   ``downsample_layers``, ``stages.N.M.depthwise_conv``, output norms ``norm{i}``
bev_ddp                   a ``TimmBackbone`` state dict, or its ``model`` (features_only) part
========================  ===========================================================================

Official and timm files go through timm's own ``checkpoint_filter_fn``; mmdet/mmcls files are
renamed to the official layout first.  Dropped on purpose, each with a note: buffers timm rebuilds
(``relative_position_index``, ``attn_mask``), the classifier ``head`` and the classification ``norm``.
Any other key that does not map is an :class:`InputError` naming it.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Optional

import torch
from timm.models import convnext as timm_convnext
from timm.models import swin_transformer as timm_swin

from bev_ddp.errors import InputError
from bev_ddp.nn.checkpoint import read_state_dict

if TYPE_CHECKING:
    from bev_ddp.nn.backbone import TimmBackbone

log = logging.getLogger(__name__)

# key prefixes under which whole-model checkpoints keep their backbone ("" = a backbone file)
BACKBONE_PREFIXES = ("", "backbone.", "model.", "module.", "img_backbone.", "encoders.camera.backbone.",
                     "camera.backbone.", "encoder.backbone.")
_ROOT = re.compile(r"(patch_embed|layers|stages|stem|downsample_layers|norm\d*|norm_pre|head|model|out_norms|"
                   r"layers_\d+|stages_\d+|stem_\d+)\.")
_SWIN_TIMM_KEY = re.compile(
    r"patch_embed\.(proj|norm)\.(weight|bias)"
    r"|layers\.\d+\.blocks\.\d+\.((norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    r"|attn\.relative_position_bias_table)"
    r"|layers\.\d+\.downsample\.(norm\.(weight|bias)|reduction\.weight)"
    r"|norm\d*\.(weight|bias)|head(\.fc)?\.(weight|bias)"
)
_CONVNEXT_TIMM_KEY = re.compile(
    r"stem\.[01]\.(weight|bias)"
    r"|stages\.\d+\.downsample\.[01]\.(weight|bias)"
    r"|stages\.\d+\.blocks\.\d+\.(gamma|(conv_dw|norm|mlp\.fc1|mlp\.fc2)\.(weight|bias))"
    r"|norm\d+\.(weight|bias)|head\.(norm|fc)\.(weight|bias)"
)
_SWIN_BUFFERS = ("relative_position_index", "attn_mask")


# --------------------------------------------------------------------------- detection
def swin_naming(keys: Iterable[str]) -> Optional[str]:
    """``mmdet``, ``official`` or ``timm`` for a Swin state dict's keys, else ``None``."""
    keys = set(keys)
    if "patch_embed.projection.weight" in keys or any(".attn.w_msa." in k for k in keys):
        return "mmdet"
    if "patch_embed.proj.weight" in keys and any(k.startswith("layers.") for k in keys):
        return "official" if any(k.startswith("layers.0.downsample.") for k in keys) else "timm"
    return None


def convnext_naming(keys: Iterable[str]) -> Optional[str]:
    """``timm``, ``official`` or ``mmcls`` for a ConvNeXt state dict's keys, else ``None``."""
    keys = set(keys)
    if "stem.0.weight" in keys and any(".conv_dw." in k for k in keys):
        return "timm"
    if "downsample_layers.0.0.weight" in keys:
        return "mmcls" if any(".depthwise_conv." in k for k in keys) else "official"
    return None


# --------------------------------------------------------------------------- Swin
def unfold_to_timm_order(value: torch.Tensor) -> torch.Tensor:
    """Reorder the last axis (4·C) of a PatchMerging weight from mmdet's to timm's neighbourhood order.

    mmdet concatenates the 2×2 neighbourhood with ``nn.Unfold``: channel ``c·4 + kh·2 + kw``; timm
    (and the official Swin) concatenate x0..x3: channel ``kw·2C + kh·C + c``.
    """
    *lead, four_c = value.shape
    c = four_c // 4
    grid = value.reshape(*lead, c, 2, 2)  # [..., c, kh, kw]
    n = len(lead)
    return grid.permute(*range(n), n + 2, n + 1, n).reshape(*lead, four_c)  # [..., kw, kh, c]


def _mmdet_swin_to_official(src: Mapping[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    permuted = 0
    for key, value in src.items():
        new = key.replace("patch_embed.projection.", "patch_embed.proj.")
        match = re.fullmatch(r"stages\.(\d+)\.(.+)", new)
        if match:
            stage, rest = match.groups()
            rest = rest.replace(".attn.w_msa.", ".attn.").replace(".ffn.layers.0.0.", ".mlp.fc1.")
            rest = rest.replace(".ffn.layers.1.", ".mlp.fc2.")
            if rest in ("downsample.reduction.weight", "downsample.norm.weight", "downsample.norm.bias"):
                value = unfold_to_timm_order(value)
                permuted += 1
            new = f"layers.{stage}.{rest}"
        out[new] = value
    notes.append(f"renamed {len(src)} mmdet Swin keys to official names (stages→layers, attn.w_msa→attn, "
                 "ffn.layers.0.0/1→mlp.fc1/fc2, patch_embed.projection→proj)")
    if permuted:
        notes.append(f"permuted {permuted} PatchMerging reduction/norm tensors from nn.Unfold order (c·4+kh·2+kw) "
                     "to timm order (kw·2C+kh·C+c)")
    return out


def _swin_arch(state: Mapping[str, torch.Tensor]) -> dict:
    """Architecture keywords of timm's SwinTransformer read off an official/timm-named state dict."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None:
        raise InputError("Swin state dict has no patch_embed.proj(ection).weight")
    blocks: dict[int, int] = {}
    for key in state:
        match = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise InputError(f"Swin state dict has blocks in stages {sorted(blocks)}, expected 0..N-1")
    tables = [state[f"layers.{s}.blocks.0.attn.relative_position_bias_table"] for s in range(len(blocks))]
    window = (math.isqrt(int(tables[0].shape[0])) + 1) // 2
    embed_dim = int(proj.shape[0])
    return dict(embed_dim=embed_dim, patch_size=int(proj.shape[-1]), in_chans=int(proj.shape[1]),
                depths=tuple(blocks[s] for s in range(len(blocks))), num_heads=tuple(int(t.shape[1]) for t in tables),
                window_size=window, mlp_ratio=state["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed_dim)


def _features_key(key: str) -> str:
    """timm full-model key → key of our TimmBackbone (features_only flattens ``layers.0`` to ``layers_0``)."""
    match = re.fullmatch(r"norm(\d+)\.(.+)", key)
    if match:
        return f"out_norms.{match.group(1)}.{match.group(2)}"
    return "model." + re.sub(r"^(layers|stages|stem)\.(\d+)\.", r"\1_\2.", key)


def _to_backbone_keys(state: Mapping[str, torch.Tensor], pattern: re.Pattern, what: str,
                      origin: Mapping[str, str], notes: list[str]) -> dict[str, torch.Tensor]:
    unknown = sorted(origin.get(k, k) for k in state if not pattern.fullmatch(k))
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise InputError(f"{what} state dict has keys that map to no backbone tensor: {', '.join(unknown[:10])}{more}")
    dropped = sorted(k for k in state if k.startswith("head.") or k.startswith("norm."))
    if dropped:
        notes.append(f"dropped {len(dropped)} classifier tensors not used by a feature backbone: {', '.join(dropped)}")
    return {_features_key(k): v for k, v in state.items() if k not in dropped}


def swin_to_backbone_state_dict(src: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """mmdet / official / timm Swin state dict → ``TimmBackbone`` keys (see module docstring), notes."""
    naming = swin_naming(src)
    if naming is None:
        raise InputError("not a Swin state dict (no patch_embed.proj(ection).weight with layers.* or stages.* keys)")
    notes = [f"detected {naming} Swin key naming"]
    state = _mmdet_swin_to_official(src, notes) if naming == "mmdet" else dict(src)
    origin = dict(zip(state, src))  # converted key -> source key (renaming keeps the order)
    buffers = [k for k in state if k.endswith(_SWIN_BUFFERS)]
    if naming != "timm" or buffers:
        try:
            arch = _swin_arch(state)
        except KeyError as exc:
            raise InputError(f"{naming} Swin state dict lacks {exc.args[0]}") from exc
        model = timm_swin.SwinTransformer(**arch, num_classes=0, always_partition=True, strict_img_size=False,
                                          weight_init="skip", device="meta")
        filtered = timm_swin.checkpoint_filter_fn(state, model)  # drops buffers; downsample end → start of next stage
        kept = [k for k in state if not k.endswith(_SWIN_BUFFERS)]  # the filter keeps their order
        origin = {new: origin[old] for old, new in zip(kept, filtered)}
        if naming != "timm":
            notes.append("moved layers.N.downsample to layers.(N+1).downsample (downsampling at the end of a stage → "
                         "at the start of the next, as timm)")
        if buffers:
            notes.append(f"dropped {len(buffers)} buffers timm rebuilds (relative_position_index / attn_mask)")
        state = dict(filtered)
    out = _to_backbone_keys(state, _SWIN_TIMM_KEY, f"{naming} Swin", origin, notes)
    norms = sorted({k.split(".")[1] for k in out if k.startswith("out_norms.")})
    if norms:
        notes.append(f"output norms norm{{{','.join(norms)}}} → out_norms.{{{','.join(norms)}}}")
    return out, notes


# --------------------------------------------------------------------------- ConvNeXt
def convnext_to_backbone_state_dict(src: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """timm / official / mmcls ConvNeXt state dict → ``TimmBackbone`` keys, notes."""
    naming = convnext_naming(src)
    if naming is None:
        raise InputError("not a ConvNeXt state dict (no stem.0.weight or downsample_layers.0.0.weight)")
    notes = [f"detected {naming} ConvNeXt key naming"]
    state, origin = dict(src), {}
    if naming == "mmcls":
        state = {k.replace(".depthwise_conv.", ".dwconv.").replace(".pointwise_conv", ".pwconv"): v for k, v in src.items()}
        notes.append("renamed mmcls ConvNeXt keys (depthwise_conv→dwconv, pointwise_convN→pwconvN)")
    if naming != "timm":
        depths = [0] * 4
        for key in state:
            match = re.match(r"stages\.(\d+)\.(\d+)\.", key)
            if match:
                depths[int(match.group(1))] = max(depths[int(match.group(1))], int(match.group(2)) + 1)
        try:
            dims = [int(state[f"stages.{s}.0.dwconv.weight"].shape[0]) for s in range(4)]
        except KeyError as exc:
            raise InputError(f"{naming} ConvNeXt state dict lacks {exc.args[0]}") from exc
        model = timm_convnext.ConvNeXt(depths=tuple(depths), dims=tuple(dims), num_classes=0, device="meta")
        filtered = timm_convnext.checkpoint_filter_fn(state, model)  # renames one to one, in order
        origin = dict(zip(filtered, src))
        state = dict(filtered)
        notes.append("renamed official ConvNeXt keys with timm's convnext.checkpoint_filter_fn")
    return _to_backbone_keys(state, _CONVNEXT_TIMM_KEY, f"{naming} ConvNeXt", origin, notes), notes


# --------------------------------------------------------------------------- loading
def _backbone_subtree(state: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """The prefix whose keys look most like a backbone's, and that sub-dict with the prefix removed."""
    best, best_count = "", 0
    for prefix in BACKBONE_PREFIXES:
        count = sum(1 for k in state if k.startswith(prefix) and _ROOT.match(k[len(prefix):]))
        if count > best_count:
            best, best_count = prefix, count
    if best_count == 0:
        return "", {}
    return best, {k[len(best):]: v for k, v in state.items() if k.startswith(best)}


def backbone_state_dict(src: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Any accepted backbone layout (module docstring) → ``TimmBackbone`` keys, notes."""
    if any(k.startswith(("model.", "out_norms.")) for k in src):
        return dict(src), ["bev_ddp backbone keys"]
    if any(re.match(r"(layers|stages|stem)_\d+\.", k) for k in src):
        return {f"model.{k}": v for k, v in src.items()}, ["timm features_only keys"]
    if swin_naming(src):
        return swin_to_backbone_state_dict(src)
    if convnext_naming(src):
        return convnext_to_backbone_state_dict(src)
    raise InputError(f"keys match no known backbone layout (Swin or ConvNeXt; first keys: {', '.join(list(src)[:4])})")


def load_backbone_weights(backbone: "TimmBackbone", path: str | Path) -> list[str]:
    """Load a local pretrained file into ``backbone`` strictly; returns the conversion notes (also logged).

    The file is read with ``torch.load(weights_only=True)``; its backbone may sit under one of
    :data:`BACKBONE_PREFIXES` (a detector's or segmentor's checkpoint).  Every backbone tensor must
    be filled and every file tensor under that prefix used, except that ``out_norms`` absent from
    the file (ImageNet files have none) keep their identity initialisation, as in mmdet.  Anything
    else raises :class:`InputError` naming the keys.
    """
    state = read_state_dict(path)
    prefix, sub = _backbone_subtree(state)
    if not sub:
        first = ", ".join(list(state)[:4])
        raise InputError(f"backbone checkpoint {path} shares no parameter name with any backbone layout (first keys: {first})")
    try:
        converted, notes = backbone_state_dict(sub)
    except InputError as exc:
        raise InputError(f"backbone checkpoint {path}: {exc}") from exc
    if prefix:
        notes.insert(0, f"backbone under prefix {prefix!r}; {len(state) - len(sub)} other keys ignored")
    own = backbone.state_dict()
    unexpected = sorted(k for k in converted if k not in own)
    mismatch = sorted(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in converted.items()
                      if k in own and own[k].shape != v.shape)
    missing = sorted(k for k in own if k not in converted)
    fresh_norms = [k for k in missing if k.startswith("out_norms.")]
    if fresh_norms and len(fresh_norms) == sum(k.startswith("out_norms.") for k in own):
        missing = [k for k in missing if not k.startswith("out_norms.")]
        notes.append(f"the file has no output norms: {len(fresh_norms)} out_norms tensors keep their initial values")
    problems = [(t, ks) for t, ks in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatch)) if ks]
    if problems:
        shown = "; ".join(f"{t} ({len(ks)}): {', '.join(ks[:6])}{' ...' if len(ks) > 6 else ''}" for t, ks in problems)
        hint = ""
        if unexpected and all(k.startswith("out_norms.") for k in unexpected):
            hint = " (the file has mmdet's output norms: build the backbone with mmdet_layout: true)"
        raise InputError(f"backbone checkpoint {path} does not fit the backbone: {shown}{hint}")
    backbone.load_state_dict(converted, strict=False)
    log.info("backbone weights from %s: %d tensors; %s", path, len(converted), "; ".join(notes))
    return notes
