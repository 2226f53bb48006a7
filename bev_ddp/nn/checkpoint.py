"""Load local weights (a backbone or a whole model) and report what did not match.

Files are read with ``torch.load(weights_only=True)`` (tensors and plain containers only) by
:func:`read_checkpoint`, the one reader of every checkpoint (training checkpoints of
:mod:`bev_ddp.engine.checkpoint` too); its messages name the file and say why it was refused.
Accepted layouts: a bare state dict, or a dict holding one under ``state_dict`` / ``model``
(our training checkpoints, mmcv/timm files).  An optional ``prefix`` selects and strips a
sub-tree (e.g. ``backbone.`` of a detector checkpoint).  :func:`load_model_checkpoint` is the one
loader of every task's ``model.checkpoint`` key (whole-model weights loaded after building).
"""
from __future__ import annotations

import logging
import pickle
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bev_ddp.errors import InputError

log = logging.getLogger(__name__)


class CheckpointMismatchWarning(UserWarning):
    """A loaded checkpoint did not cover the module exactly."""


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded into a module.

    Attributes:
        path: the file.
        loaded: number of tensors copied.
        missing: module keys the checkpoint lacks (they keep their initial values).
        unexpected: checkpoint keys the module does not have (ignored).
        shape_mismatch: ``key: checkpoint shape vs module shape`` (not copied).
    """

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 10) -> str:
        def block(title: str, keys: list[str]) -> str:
            shown = "\n".join(f"    {k}" for k in keys[:limit])
            more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
            return f"  {title} ({len(keys)}):\n{shown}{more}"

        lines = [f"checkpoint {self.path}: {self.loaded} tensors loaded"]
        for title, keys in (("missing in checkpoint", self.missing), ("unexpected in checkpoint", self.unexpected),
                            ("shape mismatch", self.shape_mismatch)):
            if keys:
                lines.append(block(title, keys))
        return "\n".join(lines)


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, with one-line messages naming ``path``.

    Raises:
        InputError: the file is missing, empty (0 bytes), not a plain tensor checkpoint (the safe
            loader refused an object in it) or unreadable (corrupt or truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"checkpoint {path} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # a raw pickle draws a protocol UserWarning before the refusal below
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
        raise InputError(
            f"checkpoint {path} could not be read: not a plain tensor checkpoint (the safe loader refused it: "
            f"{detail or 'unknown'})"
        ) from exc
    except Exception as exc:  # torch raises several types for corrupt / foreign / truncated files
        detail = (str(exc).split(". ")[0] or type(exc).__name__).strip()
        raise InputError(f"checkpoint {path} could not be read (corrupt or truncated?): {detail}") from exc


def read_state_dict(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (see module docstring); keys under ``prefix`` only, stripped."""
    path = Path(path)
    data = read_checkpoint(path)
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(f"checkpoint {path} holds no state dict of tensors")
    if prefix:
        data = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
        if not data:
            raise InputError(f"checkpoint {path} has no key starting with {prefix!r}")
    return data


def in_own_layout(own: dict[str, Any], weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` tagged with the module versions of ``own`` (a ``module.state_dict()``) for ``load_state_dict``.

    Our checkpoints are always in the layout of our own modules.  A plain dict carries no module
    versions, and some libraries re-read unversioned weights in an old layout: once mmdet3d is
    imported, spconv modules permute unversioned kernels from spconv 1.x's (D, H, W, in, out) order.
    """
    tagged = OrderedDict(weights)
    tagged._metadata = getattr(own, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    return tagged


def load_weights(module: nn.Module, path: str | Path, *, prefix: str = "", strict: bool = False) -> LoadReport:
    """Copy matching tensors from the checkpoint at ``path`` into ``module``.

    Args:
        module: the model or sub-module (e.g. the camera backbone).
        path: local checkpoint file.
        prefix: only keys starting with it are used, with it removed.
        strict: raise :class:`InputError` (with the report) unless the keys match exactly.

    Returns:
        a :class:`LoadReport`; any mismatch is also warned with :class:`CheckpointMismatchWarning`.
    """
    state = read_state_dict(path, prefix)
    own = module.state_dict()
    report = LoadReport(path=str(path), loaded=0)
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.shape_mismatch.append(f"{key}: {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            usable[key] = value
    report.missing = sorted(k for k in own if k not in usable and not any(m.startswith(k + ":") for m in report.shape_mismatch))
    report.unexpected.sort()
    if strict and not report.exact:
        raise InputError("checkpoint does not match the model exactly:\n" + report.summary())
    module.load_state_dict(in_own_layout(own, usable), strict=False)
    report.loaded = len(usable)
    if not report.exact:
        warnings.warn(report.summary(), CheckpointMismatchWarning, stacklevel=2)
    return report


def load_model_checkpoint(model: nn.Module, path: str | Path, *, key: str = "model.checkpoint",
                          strict: bool = True) -> LoadReport:
    """Whole-model weights named by the config key ``key`` (e.g. a training run's ``latest.pth``).

    Args:
        model: the model just built from the same config.
        path: local checkpoint file (see the module docstring for the layouts).
        key: the config key that named ``path``, for messages.
        strict: every model key must be in the file with its shape, and nothing else (seg, depth);
            ``False`` loads what matches and warns about the rest (BEV: a converted BEVFusion file
            under a DDP head).

    Raises:
        InputError: naming ``key`` and ``path``, when the file is missing or unreadable, or (strict)
            when it does not match the model; the message lists the mismatched keys.
    """
    if not Path(path).is_file():
        raise InputError(f"{key}: checkpoint file not found: {path}")
    try:
        report = load_weights(model, path, strict=strict)
    except InputError as exc:
        raise InputError(f"{key}: {exc}") from exc
    log.info("%s: %d tensors loaded from %s%s", key, report.loaded, path, "" if report.exact else " (not exact)")
    return report
