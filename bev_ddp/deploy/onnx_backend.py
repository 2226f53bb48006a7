"""onnxruntime backend: :class:`OnnxBEVModel`, a BEV model whose camera and map stages run exported graphs.

``OnnxBEVModel(model, export_dir).predict(batch, steps, seed)`` returns what
:meth:`BEVFusionModel.predict <bev_ddp.bev.model.BEVFusionModel.predict>` returns, so the
evaluation loop, the replay and the Python API take it unchanged: per sample of the batch (the
graphs have batch size 1) the camera graph and the map graph of each step count run on
onnxruntime, the LiDAR stage in PyTorch (spconv); see :mod:`bev_ddp.deploy.staged`.

``backend_model(...)`` checks the export's config and checkpoint fingerprints against the ones
given and raises :class:`~bev_ddp.errors.InputError` (exit 2) naming both when they differ.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bev_ddp.bev.model import BEVFusionModel
from bev_ddp.deploy.export import EXPORT_FILE, EXPORT_FORMAT, config_fingerprint, weights_fingerprint
from bev_ddp.deploy.staged import StagedBEVModel
from bev_ddp.errors import InputError

BACKENDS = ("torch", "onnxruntime")


def read_manifest(export_dir: str | Path) -> dict[str, Any]:
    """``export_dir/export.json`` (InputError naming the folder when it is missing or unreadable)."""
    path = Path(export_dir) / EXPORT_FILE
    if not path.is_file():
        raise InputError(f"--onnx {export_dir}: no {EXPORT_FILE} (write one with `bev-ddp export CONFIG CKPT --out DIR`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--onnx {export_dir}: {EXPORT_FILE} is unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise InputError(f"--onnx {export_dir}: {EXPORT_FILE} is not an export of format {EXPORT_FORMAT}")
    return manifest


def check_fingerprints(manifest: dict[str, Any], export_dir: str | Path, *, cfg: Any, model: nn.Module,
                       config: str | Path | None = None, checkpoint: str | Path | None = None) -> None:
    """Raise InputError naming both sides when the export was made from another config or checkpoint."""
    given = {"config": (config_fingerprint(cfg), config), "checkpoint": (weights_fingerprint(model), checkpoint)}
    for what, (fingerprint, source) in given.items():
        recorded = manifest.get(f"{what}_fingerprint")
        if recorded != fingerprint:
            raise InputError(
                f"--onnx {export_dir} was exported from {what} {manifest.get(what)} (fingerprint {recorded}), "
                f"but the {what} given is {source} (fingerprint {fingerprint}); re-export with `bev-ddp export`"
            )


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same thread budget as the PyTorch model
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxBEVModel(StagedBEVModel):
    """A BEV model whose camera and map stages run on onnxruntime (CPU provider); see
    :class:`~bev_ddp.deploy.staged.StagedBEVModel` for ``predict``.

    Args:
        model: the PyTorch model the export was made from (LiDAR stage, head settings).
        export_dir: the folder ``bev-ddp export`` wrote.
    """

    def __init__(self, model: BEVFusionModel, export_dir: str | Path):
        super().__init__(model)
        self.export_dir = Path(export_dir)
        self.manifest = read_manifest(export_dir)
        if list(self.manifest.get("modalities", [])) != list(model.modalities):
            raise InputError(f"--onnx {export_dir} holds a {'+'.join(self.manifest.get('modalities', []))} model, "
                             f"the config's is {'+'.join(model.modalities)}")
        self._sessions: dict[str, Any] = {}

    def session(self, name: str):
        """The onnxruntime session of graph ``name`` (``camera``, ``map_s3``, ``map``), opened once."""
        if name not in self._sessions:
            graph = self.manifest["graphs"].get(name)
            path = self.export_dir / graph["file"] if graph else None
            if path is None or not path.is_file():
                raise InputError(f"--onnx {self.export_dir}: graph {name!r} is missing")
            self._sessions[name] = _session(path)
        return self._sessions[name]

    def check_steps(self, counts: list[int]) -> None:
        missing = [s for s in counts if s not in self.manifest["steps"]] if self.is_ddp else []
        if missing:
            raise InputError(f"steps {missing} were not exported to {self.export_dir} (it holds "
                             f"{self.manifest['steps']}); export them with `bev-ddp export ... --steps`")

    def run_stage(self, name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if name == "camera":
            expected = self.manifest["graphs"]["camera"]["inputs"]["img"]
            if list(inputs["img"].shape) != expected:
                raise InputError(f"batch['img'] sample is {list(inputs['img'].shape)}, the exported camera graph "
                                 f"takes {expected}")
        feeds = {k: v.detach().to("cpu", torch.float32).contiguous().numpy() for k, v in inputs.items()}
        (out,) = self.session(name).run(None, feeds)
        return torch.from_numpy(np.ascontiguousarray(out))


def backend_model(model: BEVFusionModel, backend: str, onnx_dir: str | Path | None, *, cfg: Any,
                  config: str | Path | None = None, checkpoint: str | Path | None = None) -> nn.Module:
    """``model`` itself (``backend="torch"``) or an :class:`OnnxBEVModel` over ``onnx_dir``, after
    checking the export's fingerprints against ``cfg`` and the loaded weights."""
    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        if onnx_dir is not None:
            raise InputError("--onnx is only read with --backend onnxruntime")
        return model
    if onnx_dir is None:
        raise InputError("--backend onnxruntime needs --onnx DIR (the folder `bev-ddp export` wrote)")
    if not isinstance(model, BEVFusionModel):
        raise InputError(f"--backend onnxruntime runs BEV models (task: bev), got {type(model).__name__}")
    manifest = read_manifest(onnx_dir)
    check_fingerprints(manifest, onnx_dir, cfg=cfg, model=model, config=config, checkpoint=checkpoint)
    return OnnxBEVModel(model, onnx_dir)
