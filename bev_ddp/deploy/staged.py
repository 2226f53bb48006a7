"""A BEV model run stage by stage: :class:`StagedBEVModel` and its ``torch.compile`` form.

``predict(batch, steps, seed)`` returns what :meth:`BEVFusionModel.predict
<bev_ddp.bev.model.BEVFusionModel.predict>` returns, so the evaluation loop, the replay and the
Python API take a staged model unchanged.  Per sample of the batch: the camera stage, the LiDAR
stage (always the PyTorch model: spconv), then the map stage of each step count with the start
map drawn exactly as the PyTorch head draws it (:meth:`~bev_ddp.nn.DDPHead.initial_noise`), so a
seed gives the same map in every runtime.  The uncertainty map is computed from the step logits as
in PyTorch.  Subclasses say how a stage runs (:meth:`StagedBEVModel.run_stage`): onnxruntime
(:class:`~bev_ddp.deploy.onnx_backend.OnnxBEVModel`) or ``torch.compile`` (:class:`CompiledBEVModel`).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from bev_ddp.bev.heads import BEVPrediction, DDPBEVHead
from bev_ddp.bev.model import BEVFusionModel
from bev_ddp.deploy.stages import CameraStage, MapStage, noise_shape
from bev_ddp.diffusion.sampler import check_step_counts
from bev_ddp.diffusion.uncertainty import change_count_uncertainty


def map_stage_name(model: BEVFusionModel, steps: int) -> str:
    """``map_s{S}`` (DDP head: one graph per step count) or ``map`` (baseline head)."""
    return f"map_s{steps}" if isinstance(model.head, DDPBEVHead) else "map"


class StagedBEVModel(nn.Module):
    """Base of the staged runtimes: ``predict`` over ``run_stage(name, inputs)``.

    Args:
        model: the PyTorch model: its LiDAR stage runs here, and its head's settings (start map,
            discretisation) drive the sampling bookkeeping.
    """

    def __init__(self, model: BEVFusionModel):
        super().__init__()
        self.model = model

    @property
    def is_ddp(self) -> bool:
        return isinstance(self.model.head, DDPBEVHead)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.model.modalities

    @property
    def steps(self) -> int:
        """The wrapped model's default step count (``model.head.ddp.steps``; 1 for the baseline head)."""
        return int(getattr(self.model, "steps", 1))

    def run_stage(self, name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run stage ``name`` (``camera``, ``map_s{S}``, ``map``) on named batch-1 inputs."""
        raise NotImplementedError

    def check_steps(self, counts: list[int]) -> None:
        """Raise InputError for step counts this runtime cannot run (all can, by default)."""

    def camera_inputs(self, batch: dict[str, Any], index: int) -> dict[str, torch.Tensor]:
        """The camera stage's inputs for sample ``index`` (batch 1)."""
        img = batch["img"][index : index + 1]  # [1, N, 3, H, W]
        geometry = batch["geometry"]
        valid = batch.get("camera_valid")
        valid = torch.ones(img.shape[:2], device=img.device) if valid is None else valid[index : index + 1]
        return {"img": img, "intrinsics": geometry.intrinsics[index : index + 1],
                "camera2lidar": geometry.camera2lidar[index : index + 1],
                "img_aug": geometry.img_aug[index : index + 1], "lidar_aug": geometry.lidar_aug[index : index + 1],
                "camera_valid": valid.to(img.dtype)}

    def encoder_maps(self, batch: dict[str, Any], index: int) -> dict[str, torch.Tensor]:
        """``{"camera_bev": ..., "lidar_bev": ...}`` [1, C, X, Y] of sample ``index`` (LiDAR: PyTorch)."""
        maps = {}
        if self.model.camera is not None:
            maps["camera_bev"] = self.run_stage("camera", self.camera_inputs(batch, index))
        if self.model.lidar is not None:
            metas = batch.get("meta") or []
            sample = {"points": [batch["points"][index]], "meta": metas[index : index + 1]}
            maps["lidar_bev"] = self.model.lidar_features(sample)
        return maps

    def start_map(self, encoder_size: tuple[int, int], seed: int) -> torch.Tensor:
        """[1, map_channels, h, w]: the start map the PyTorch head draws for ``seed``."""
        shape = noise_shape(self.model.head, 1, encoder_size)
        return self.model.head.ddp.initial_noise(torch.empty(shape), seed=seed)

    def step_logits(self, maps: dict[str, torch.Tensor], steps: int, seed: int) -> torch.Tensor:
        """[S, 1, K, X, Y] logits of every step of an S-step run (baseline: [1, 1, K, X, Y])."""
        name = map_stage_name(self.model, steps)
        if not self.is_ddp:
            return self.run_stage(name, maps)
        size = tuple(next(iter(maps.values())).shape[-2:])
        return self.run_stage(name, {**maps, "noise": self.start_map(size, seed)})

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], steps: Sequence[int] | None = None,
                seed: int = 0) -> dict[int, BEVPrediction]:
        """Same contract as :meth:`BEVFusionModel.predict`: ``{step count: BEVPrediction}``
        (``steps=None``: :attr:`steps`)."""
        counts = [self.steps] if steps is None else check_step_counts(steps)
        self.check_steps(counts)
        size = batch["img"].shape[0] if self.model.camera is not None else len(batch["points"])
        device = next(self.model.parameters()).device
        runs = counts if self.is_ddp else counts[:1]  # the baseline head predicts once for every count
        per_count: dict[int, list[torch.Tensor]] = {n: [] for n in runs}
        for index in range(size):
            maps = self.encoder_maps(batch, index)
            for n in runs:
                per_count[n].append(self.step_logits(maps, n, seed).to(device))
        return {n: self._prediction(torch.cat(per_count[n if self.is_ddp else runs[0]], dim=1)) for n in counts}

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


class CompiledBEVModel(StagedBEVModel):
    """The stages as ``torch.compile`` modules (compiled on first use per step count; the
    compiled ops trace as single nodes, see :mod:`bev_ddp.ops`)."""

    def __init__(self, model: BEVFusionModel, **compile_kwargs: Any):
        super().__init__(model)
        self.compile_kwargs = compile_kwargs
        self._compiled: dict[str, Any] = {}

    def run_stage(self, name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if name not in self._compiled:
            if name == "camera":
                stage: nn.Module = CameraStage(self.model.camera)
            else:
                stage = MapStage(self.model, steps=int(name[len("map_s"):]) if name != "map" else 1)
            self._compiled[name] = torch.compile(stage.eval(), **self.compile_kwargs)
        return self._compiled[name](*inputs.values())
