"""bev_ddp's BEV map model and its DDP map head as mmdet3d 1.x models (``MODELS`` registry).

:class:`BEVDDPMapModel` wraps a :class:`~bev_ddp.bev.model.BEVFusionModel` built from one of our YAML
configs in mmengine's ``BaseModel`` protocol: ``forward(inputs, data_samples, mode)`` with
``mode='loss'`` (dict of losses), ``'predict'`` (the data samples with the predicted maps) or
``'tensor'`` (the fused, decoded BEV features).  Inputs come from mmdet3d's ``Det3DDataPreprocessor``
and ``Pack3DDetInputs`` (:mod:`.batch` maps the keys).

:class:`BEVDDPMapHead` is the map head alone (DDP or BEVFusion's conv head, as ``model.head.type``
of the config says) for the fused BEV features of mmdet3d's own BEVFusion: ``loss(feats,
data_samples)`` / ``predict(feats, data_samples)``, the calling convention of BEVFusion's
``TransFusionHead``, so a det + map multi-task detector calls both heads on the same features.

Predictions (both): every data sample gains ``pred_masks_bev`` [K, X, Y] (probabilities of the
first requested step count), ``pred_masks_bev_steps`` ``{steps: [K, X, Y]}`` and
``uncertainty_bev_steps`` ``{steps: [X, Y]}``, on the label grid (``data.xbound/ybound``), in the
augmented lidar frame.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from torch import nn

from bev_ddp.bev.heads import BEVPrediction
from bev_ddp.diffusion.sampler import check_step_counts
from bev_ddp.errors import InputError
from bev_ddp.integrations.mmdet3d.batch import to_bev_batch
from bev_ddp.integrations.mmdet3d.bev_config import load_bev_config
from mmdet3d.registry import MODELS

DEFAULT_PREPROCESSOR = dict(type="Det3DDataPreprocessor", mean=[123.675, 116.28, 103.53],
                            std=[58.395, 57.12, 57.375], bgr_to_rgb=True)


def attach_predictions(data_samples: Sequence[BaseDataElement], preds: dict[int, BEVPrediction],
                       steps: Sequence[int]) -> Sequence[BaseDataElement]:
    """Write ``pred_masks_bev``, ``pred_masks_bev_steps`` and ``uncertainty_bev_steps`` into each sample."""
    for b, sample in enumerate(data_samples):
        sample.pred_masks_bev_steps = {s: preds[s].probs[b].detach() for s in steps}  # [K, X, Y] each
        sample.uncertainty_bev_steps = {s: preds[s].uncertainty[b].detach() for s in steps}  # [X, Y] each
        sample.pred_masks_bev = sample.pred_masks_bev_steps[steps[0]]
    return data_samples


@MODELS.register_module()
class BEVDDPMapModel(BaseModel):
    """A bev_ddp BEV map model (camera / LiDAR / fusion, DDP or conv head) in mmengine's protocol.

    Args:
        config: bev_ddp YAML config (``task: bev``), e.g. ``configs/bev/synth_tiny_fusion_ddp.yaml``.
        overrides: ``key=value`` overrides of that config, as on our command line.
        checkpoint: optional bev_ddp checkpoint (``bev-ddp train`` output or a state dict) to load.
        steps: DDP step counts of ``predict`` (default: the config's ``eval.steps``).
        seed: seed of the sampling noise in ``predict`` (default: the config's ``eval.seed``, as ``bev-ddp eval``).
        data_preprocessor: mmengine config of the data preprocessor (default: mmdet3d's
            ``Det3DDataPreprocessor`` with ImageNet mean/std on BGR images, as ``LoadMultiViewImageFromFiles``
            loads them).
    """

    def __init__(self, *, config: str, overrides: Sequence[str] = (), checkpoint: str | None = None,
                 steps: Sequence[int] | None = None, seed: int | None = None, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(DEFAULT_PREPROCESSOR), init_cfg=init_cfg)
        from bev_ddp.bev.build import build_bev_model

        self.cfg = load_bev_config(config, overrides)
        self.model = build_bev_model(self.cfg)
        if checkpoint is not None:
            from bev_ddp.engine.checkpoint import load_model_weights

            load_model_weights(self.model, checkpoint)
        self.steps = check_step_counts(list(steps) if steps is not None else list(self.cfg.eval.steps))
        self.seed = int(self.cfg.eval.seed if seed is None else seed)

    def _batch(self, inputs: dict[str, Any], data_samples: Sequence[Any] | None, with_labels: bool) -> dict[str, Any]:
        return to_bev_batch(inputs, data_samples or [], modalities=self.model.modalities, with_labels=with_labels)

    def forward(self, inputs: dict[str, Any], data_samples: Sequence[Any] | None = None, mode: str = "tensor"):
        if mode == "loss":
            _, losses = self.model(self._batch(inputs, data_samples, with_labels=True))
            return losses
        if mode == "predict":
            if not data_samples:
                raise InputError("predict mode needs the data samples (their metainfo holds the calibration)")
            preds = self.model.predict(self._batch(inputs, data_samples, with_labels=False), steps=self.steps,
                                       seed=self.seed)
            return attach_predictions(data_samples, preds, self.steps)
        if mode == "tensor":
            return self.model.encode(self._batch(inputs, data_samples, with_labels=False))  # [B, C, X, Y]
        raise InputError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")


@MODELS.register_module()
class BEVDDPMapHead(nn.Module):
    """The map head of a bev_ddp config on another model's BEV features (e.g. mmdet3d's BEVFusion).

    Args:
        config: bev_ddp YAML config whose ``model.head`` (type, DDP settings, ``input_scope``: the
            feature grid in metres) and ``data.classes`` / ``xbound`` / ``ybound`` (label grid) are used.
        in_channels: channels of the BEV features (512 for BEVFusion's SECONDFPN).
        overrides: ``key=value`` overrides of that config.
        steps: step counts of ``predict`` (default: the config's ``eval.steps``).  seed: sampling seed
            (default: the config's ``eval.seed``).
    """

    def __init__(self, *, config: str, in_channels: int, overrides: Sequence[str] = (),
                 steps: Sequence[int] | None = None, seed: int | None = None):
        super().__init__()
        from bev_ddp.bev.build import build_head

        cfg = load_bev_config(config, overrides)
        self.head = build_head(cfg.model.head, in_channels=int(in_channels), classes=list(cfg.data.classes),
                               xbound=list(cfg.data.xbound), ybound=list(cfg.data.ybound))
        self.steps = check_step_counts(list(steps) if steps is not None else list(cfg.eval.steps))
        self.seed = int(cfg.eval.seed if seed is None else seed)

    @staticmethod
    def _features(feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The BEV map [B, C, X, Y]: the tensor itself or the first of a list (BEVFusion's neck output)."""
        return feats if isinstance(feats, torch.Tensor) else feats[0]

    def loss(self, feats: torch.Tensor | Sequence[torch.Tensor], data_samples: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Map losses against each sample's ``gt_masks_bev`` [K, X, Y]."""
        missing = [i for i, s in enumerate(data_samples) if "gt_masks_bev" not in s]
        if missing:
            raise InputError(f"data samples {missing} have no gt_masks_bev (add BEVMapLabels and PackBEVMapInputs)")
        targets = torch.stack([torch.as_tensor(s.gt_masks_bev).float() for s in data_samples])  # [B, K, X, Y]
        _, losses = self.head(self._features(feats), targets.to(self._features(feats).device))
        return losses

    def predict(self, feats: torch.Tensor | Sequence[torch.Tensor], data_samples: Sequence[Any]) -> Sequence[Any]:
        """The data samples with the predicted maps (see the module docstring)."""
        with torch.no_grad():
            preds = self.head.predict(self._features(feats), steps=self.steps, seed=self.seed)
        return attach_predictions(data_samples, preds, self.steps)
