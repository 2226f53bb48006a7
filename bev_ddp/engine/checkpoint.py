"""Training checkpoints: written atomically, read with ``weights_only=True`` (``nn.checkpoint.read_checkpoint``).

A checkpoint is a plain dict (tensors, numbers, strings, lists, dicts), so it loads without
unpickling arbitrary objects::

    {"format": 1, "step": int, "model": state_dict, "optimizer": ..., "scheduler": ...,
     "scaler": ... or None, "rng": RNGState as dict, "data": {"epoch": int, "position": int},
     "config": resolved config as a dict, "model_fingerprint": str, "world_size": int}

``step`` counts finished optimiser steps; ``data`` says where the next batch starts (epoch and
number of batches of that epoch already consumed), ``rng`` is the random state at that point.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bev_ddp.engine.interrupt import signals_deferred
from bev_ddp.errors import InputError
from bev_ddp.nn.checkpoint import in_own_layout, read_checkpoint
from bev_ddp.output_files import remove_stale_tmp

FORMAT_VERSION = 1
LATEST = "latest.pth"  # a run folder's link to its newest checkpoint
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
    A SIGINT / SIGTERM during the write takes effect after the rename (:func:`signals_deferred`).
    A temporary left by a killed process (SIGKILL) is removed by :func:`remove_stale_checkpoint_tmp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with signals_deferred():
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


def remove_stale_checkpoint_tmp(work_dir: str | Path) -> list[Path]:
    """Delete the temporaries of :func:`save_atomic` / :func:`link_latest` a killed run left behind."""
    work_dir = Path(work_dir)
    return remove_stale_tmp(work_dir / "checkpoints", ".*.pth.*.tmp") + remove_stale_tmp(work_dir, ".*.pth.tmp")


def model_fingerprint(state: dict[str, Any]) -> str:
    """Hash of a state dict's layout (sorted key, shape, dtype), not of its values."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        layout = f"{tuple(value.shape)}:{value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
        digest.update(f"{key}={layout};".encode())
    return digest.hexdigest()[:16]


def check_metadata(ckpt: dict[str, Any], path: str | Path) -> None:
    """Validate ``format`` and ``step`` of a training checkpoint; lists every bad key."""
    bad = []
    fmt = ckpt.get("format")
    if fmt != FORMAT_VERSION or isinstance(fmt, bool):
        bad.append(f"format={fmt!r} (this version reads {FORMAT_VERSION})")
    step = ckpt.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        bad.append(f"step={step!r} (need an integer >= 0)")
    if bad:
        raise InputError(f"checkpoint {path} has bad metadata: {', '.join(bad)}")


def check_weights_match(own: dict[str, Any], state: dict[str, Any], path: str | Path,
                        fingerprint: str | None = None) -> list[str]:
    """Compare a checkpoint's state dict with a model's; raises listing the mismatched keys.

    Returns the keys whose shapes differ (empty when everything matches).  ``fingerprint`` is the
    checkpoint's stored :func:`model_fingerprint`, checked when given.
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched_keys = sorted(
        k for k in set(own) & set(state)
        if isinstance(state[k], torch.Tensor) and isinstance(own[k], torch.Tensor) and state[k].shape != own[k].shape
    )
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched_keys]
    parts = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
            parts.append(f"{title} keys: {shown}")
    if not parts and fingerprint is not None and fingerprint != model_fingerprint(own):
        parts.append(f"model_fingerprint {fingerprint} vs this model's {model_fingerprint(own)} (dtypes differ?)")
    if parts:
        raise InputError(f"checkpoint {path} does not match the model: " + "; ".join(parts))
    return mismatched_keys


def check_finite(state: dict[str, Any], path: str | Path) -> None:
    """Raise naming the checkpoint and the weights that hold NaN or inf."""
    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise InputError(f"checkpoint {path} holds NaN or inf weights: {shown}")


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint written by :func:`save_atomic` and check its keys and metadata."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise InputError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise InputError(f"checkpoint {path} lacks the key(s) {', '.join(missing)}; is it a bev-ddp training checkpoint?")
    check_metadata(ckpt, path)
    if not isinstance(ckpt["model"], dict):
        raise InputError(f"checkpoint {path} holds no model state dict")
    check_finite(ckpt["model"], path)
    if str(map_location) != "cpu":
        ckpt["model"] = {k: v.to(map_location) if isinstance(v, torch.Tensor) else v for k, v in ckpt["model"].items()}
    return ckpt


def load_model_weights(model: torch.nn.Module, path: str | Path, *, strict: bool = True, content: Any = None) -> None:
    """Load the ``model`` entry of a training checkpoint (or a bare state dict) into ``model``.

    ``content``: the file as :func:`read_checkpoint` already returned it (it is not read again).

    A training checkpoint's metadata (``format``, ``step``, ``model_fingerprint``) is validated
    too.  Raises :class:`InputError` listing missing and unexpected keys (and shape mismatches)
    when they do not match and ``strict`` is set, and naming weights that hold NaN or inf.
    """
    path = Path(path)
    obj = read_checkpoint(path) if content is None else content
    is_training_checkpoint = isinstance(obj, dict) and "format" in obj and "model" in obj
    if is_training_checkpoint:
        check_metadata(obj, path)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"checkpoint {path} holds no model state dict")
    own = model.state_dict()
    fingerprint = obj.get("model_fingerprint") if is_training_checkpoint else None
    if strict:
        mismatched = check_weights_match(own, state, path, fingerprint)
    else:
        mismatched = [k for k in set(own) & set(state)
                      if isinstance(state[k], torch.Tensor) and getattr(own[k], "shape", None) != state[k].shape]
    check_finite({k: v for k, v in state.items() if k in own}, path)
    model.load_state_dict(in_own_layout(own, {k: v for k, v in state.items() if k in own and k not in mismatched}),
                          strict=False)


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
