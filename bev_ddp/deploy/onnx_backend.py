"""onnxruntime backend: :class:`OnnxBEVModel`, a BEV model whose camera and map stages run exported graphs.

``OnnxBEVModel(model, export_dir).predict(batch, steps, seed)`` returns what
:meth:`BEVFusionModel.predict <bev_ddp.bev.model.BEVFusionModel.predict>` returns, so the
evaluation loop, the replay and the Python API take it unchanged.  Per sample of the batch (the
graphs have batch size 1): the camera graph (onnxruntime), the LiDAR stage (the PyTorch model:
spconv), then the map graph of each step count with the start map drawn exactly as the PyTorch
head draws it (:meth:`~bev_ddp.nn.DDPHead.initial_noise`), so a seed gives the same map in both
runtimes.  The uncertainty map is computed from the step logits as in PyTorch.

``backend_model(...)`` checks the export's config and checkpoint fingerprints against the ones
given and raises :class:`~bev_ddp.errors.InputError` (exit 2) naming both when they differ.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from bev_ddp.bev.heads import BEVPrediction, DDPBEVHead
from bev_ddp.bev.model import BEVFusionModel
from bev_ddp.deploy.export import EXPORT_FILE, EXPORT_FORMAT, config_fingerprint, weights_fingerprint
from bev_ddp.diffusion.sampler import check_step_counts
from bev_ddp.diffusion.uncertainty import change_count_uncertainty
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


class OnnxBEVModel(nn.Module):
    """A BEV model whose camera and map stages run on onnxruntime (CPU provider).

    Args:
        model: the PyTorch model the export was made from: its LiDAR stage runs here, and its
            head's settings (start map, discretisation) drive the sampling bookkeeping.
        export_dir: the folder ``bev-ddp export`` wrote.
    """

    def __init__(self, model: BEVFusionModel, export_dir: str | Path):
        super().__init__()
        self.model = model
        self.export_dir = Path(export_dir)
        self.manifest = read_manifest(export_dir)
        if list(self.manifest.get("modalities", [])) != list(model.modalities):
            raise InputError(f"--onnx {export_dir} holds a {'+'.join(self.manifest.get('modalities', []))} model, "
                             f"the config's is {'+'.join(model.modalities)}")
        self._sessions: dict[str, Any] = {}

    @property
    def is_ddp(self) -> bool:
        return isinstance(self.model.head, DDPBEVHead)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.model.modalities

    def session(self, name: str):
        """The onnxruntime session of graph ``name`` (``camera``, ``map_s3``, ``map``), opened once."""
        if name not in self._sessions:
            graph = self.manifest["graphs"].get(name)
            path = self.export_dir / graph["file"] if graph else None
            if path is None or not path.is_file():
                raise InputError(f"--onnx {self.export_dir}: graph {name!r} is missing")
            self._sessions[name] = _session(path)
        return self._sessions[name]

    def _run(self, name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {k: v.detach().to("cpu", torch.float32).contiguous().numpy() for k, v in inputs.items()}
        (out,) = self.session(name).run(None, feeds)
        return torch.from_numpy(np.ascontiguousarray(out))

    def camera_features(self, batch: dict[str, Any], index: int) -> torch.Tensor:
        """Camera BEV map [1, C_cam, X, Y] of sample ``index`` from the camera graph."""
        img = batch["img"][index : index + 1]  # [1, N, 3, H, W]
        geometry = batch["geometry"]
        valid = batch.get("camera_valid")
        valid = torch.ones(img.shape[:2]) if valid is None else valid[index : index + 1].to(torch.float32)
        expected = self.manifest["graphs"]["camera"]["inputs"]["img"]
        if list(img.shape) != expected:
            raise InputError(f"batch['img'] sample is {list(img.shape)}, the exported camera graph takes {expected}")
        return self._run("camera", {"img": img, "intrinsics": geometry.intrinsics[index : index + 1],
                                    "camera2lidar": geometry.camera2lidar[index : index + 1],
                                    "img_aug": geometry.img_aug[index : index + 1],
                                    "lidar_aug": geometry.lidar_aug[index : index + 1], "camera_valid": valid})

    def encoder_maps(self, batch: dict[str, Any], index: int) -> dict[str, torch.Tensor]:
        """``{"camera_bev": ..., "lidar_bev": ...}`` [1, C, X, Y] of sample ``index`` (LiDAR: PyTorch)."""
        maps = {}
        if self.model.camera is not None:
            maps["camera_bev"] = self.camera_features(batch, index)
        if self.model.lidar is not None:
            sample = {"points": [batch["points"][index]], "meta": (batch.get("meta") or [{}] * (index + 1))[index:index + 1]}
            maps["lidar_bev"] = self.model.lidar_features(sample).cpu()
        return maps

    def start_map(self, seed: int) -> torch.Tensor:
        """[1, map_channels, h, w]: the start map the PyTorch head draws for ``seed``."""
        shape = self.manifest["noise_shape"]
        return self.model.head.ddp.initial_noise(torch.empty(1, 1, *shape[2:]), seed=seed)

    def step_logits(self, maps: dict[str, torch.Tensor], steps: int, seed: int) -> torch.Tensor:
        """[S, 1, K, X, Y] logits of every step of an S-step run (baseline: [1, 1, K, X, Y])."""
        if not self.is_ddp:
            return self._run("map", maps)
        return self._run(f"map_s{steps}", {**maps, "noise": self.start_map(seed)})

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], steps: Sequence[int] = (1,), seed: int = 0) -> dict[int, BEVPrediction]:
        """Same contract as :meth:`BEVFusionModel.predict`: ``{step count: BEVPrediction}``."""
        counts = check_step_counts(steps)
        if self.is_ddp:
            missing = [s for s in counts if s not in self.manifest["steps"]]
            if missing:
                raise InputError(f"steps {missing} were not exported to {self.export_dir} (it holds "
                                 f"{self.manifest['steps']}); export them with `bev-ddp export ... --steps`")
        size = batch["img"].shape[0] if self.model.camera is not None else len(batch["points"])
        device = next(self.model.parameters()).device
        per_count: dict[int, list[torch.Tensor]] = {n: [] for n in counts}
        for index in range(size):
            maps = self.encoder_maps(batch, index)
            for n in (counts if self.is_ddp else counts[:1]):
                per_count[n].append(self.step_logits(maps, n, seed))
        if not self.is_ddp:
            per_count = {n: per_count[counts[0]] for n in counts}
        return {n: self._prediction(torch.cat(per_count[n], dim=1).to(device)) for n in counts}

    def _prediction(self, step_logits: torch.Tensor) -> BEVPrediction:
        """[S, B, K, X, Y] logits -> the BEVPrediction the PyTorch head would return."""
        step_probs = [x.sigmoid() for x in step_logits]
        probs = step_probs[-1]
        if self.is_ddp:
            encoder = self.model.head.ddp.label_encoder
            uncertainty = change_count_uncertainty([encoder.discretize(x) for x in step_logits])
        else:
            uncertainty = probs.new_zeros(probs.shape[0], *probs.shape[2:])
        return BEVPrediction(probs=probs, uncertainty=uncertainty, step_probs=step_probs)


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
