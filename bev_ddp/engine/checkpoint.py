"""Training checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts), so it loads without
unpickling arbitrary objects::

    {"format": 1, "step": int, "model": state_dict, "optimizer": ..., "scheduler": ...,
     "scaler": ... or None, "rng": RNGState as dict, "data": {"epoch": int, "position": int},
     "config": resolved config as a dict}

``step`` counts finished optimiser steps; ``data`` says where the next batch starts (epoch and
number of batches of that epoch already consumed), ``rng`` is the random state at that point.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bev_ddp.errors import InputError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "step", "model", "optimizer", "scheduler", "rng", "data", "config")


@dataclass
class RNGState:
    """Global random states of one process (torch CPU, CUDA, numpy, python)."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor]
    numpy_keys: torch.Tensor  # uint32 MT19937 key as int64
    numpy_pos: int
    numpy_has_gauss: int
    numpy_cached_gauss: float
    python: list[Any]

    @staticmethod
    def capture() -> "RNGState":
        _, keys, pos, has_gauss, cached = np.random.get_state()
        return RNGState(
            torch_cpu=torch.get_rng_state(),
            torch_cuda=list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
            numpy_keys=torch.from_numpy(keys.astype(np.int64)),
            numpy_pos=int(pos),
            numpy_has_gauss=int(has_gauss),
            numpy_cached_gauss=float(cached),
            python=_to_lists(random.getstate()),
        )

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.torch_cuda)
        np.random.set_state(
            ("MT19937", self.numpy_keys.numpy().astype(np.uint32), self.numpy_pos,
             self.numpy_has_gauss, self.numpy_cached_gauss)
        )
        random.setstate(_to_tuples(self.python))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "RNGState":
        return RNGState(**data)


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``.

    A crash mid-write leaves the previous file intact; readers never see a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint written by :func:`save_atomic` and check its keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / foreign files
        raise InputError(f"checkpoint {path} could not be read: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise InputError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise InputError(f"checkpoint {path} lacks the key(s) {', '.join(missing)}; is it a bev-ddp training checkpoint?")
    if ckpt["format"] != FORMAT_VERSION:
        raise InputError(f"checkpoint {path} has format {ckpt['format']}, this version reads {FORMAT_VERSION}")
    return ckpt


def load_model_weights(model: torch.nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Load the ``model`` entry of a training checkpoint (or a bare state dict) into ``model``.

    Raises :class:`InputError` listing missing and unexpected keys (and shape mismatches) when
    they do not match and ``strict`` is set.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"checkpoint {path} could not be read: {exc}") from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"checkpoint {path} holds no model state dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched_keys = {
        k for k in set(own) & set(state) if isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    }
    mismatched = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched_keys)
    if strict and (missing or unexpected or mismatched):
        parts = [f"checkpoint {path} does not match the model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
                parts.append(f"  {title} keys: {shown}")
        raise InputError("\n".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in mismatched_keys}, strict=False)


def link_latest(target: Path, link: Path) -> None:
    """Point ``link`` at ``target`` (hard link, atomically replaced; a copy where links fail)."""
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError:
        shutil.copyfile(target, tmp)
    os.replace(tmp, link)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two plain config dicts (``train.work_dir`` ignored)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith("train.work_dir"))
