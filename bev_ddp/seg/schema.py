"""Config schema of image segmentation (``task: seg``).

Defaults are the paper's ADE20K setting with Swin-T (Table 1): 512×512 crops, FPN 256 with
GroupNorm, a 6-layer map decoder, class embedding at scale 0.01, cosine schedule, auxiliary FCN
head at 0.4, AdamW 6e-5 with poly decay.  YAML files in ``configs/seg/`` override them.
Sizes are ``[height, width]`` in pixels.  The backbone, inference and DDP-head sections are the
ones every task shares (:mod:`bev_ddp.nn.image_encoder_schema`, :mod:`bev_ddp.nn.ddp_head_schema`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from bev_ddp.config import constrained
from bev_ddp.nn.ddp_head_schema import DDPHeadSchema
from bev_ddp.nn.image_encoder_schema import BackboneSchema, InferenceSchema
from bev_ddp.schema import EvalSchema, OptimSchema, TrainSchema


@dataclass
class SegModelSchema:
    num_classes: int = 150
    backbone: BackboneSchema = field(default_factory=BackboneSchema)
    neck_channels: int = 256
    num_groups: int = 32  # GroupNorm groups in the FPN, merge and FCN head
    ddp: DDPHeadSchema = field(default_factory=DDPHeadSchema)  # label_scale: class embedding scale (Table 5b)
    aux_weight: float = 0.4  # auxiliary FCN head; 0 removes the head
    aux_channels: int = 256
    accumulate: bool = False  # average class probabilities over the sampling steps
    inference: InferenceSchema = field(default_factory=InferenceSchema)
    # multi-scale + flip test: null = the input only; the authors' 47.8 / 83.15 figures use
    # [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] with tta_flip true
    tta_scales: Optional[list[float]] = constrained(None, each_gt=0)
    tta_flip: bool = False
    # local whole-model weights (e.g. a run's latest.pth) loaded strictly after building; the backbone
    # file model.backbone.checkpoint is then not read (this file carries the backbone)
    checkpoint: Optional[str] = None


@dataclass
class SegDataSchema:
    """Dataset and augmentation.

    ``format`` is ``ade20k``, ``cityscapes`` or ``synthetic`` (the image-task export of ``bev-ddp synth``).
    """

    format: str = "ade20k"
    root: str = "data/ade/ADEChallengeData2016"
    scale: Optional[list[int]] = field(default_factory=lambda: [2048, 512])  # keep-ratio rescale bound (long, short)
    ratio_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    crop_size: Optional[list[int]] = field(default_factory=lambda: [512, 512])
    flip_prob: float = 0.5
    cat_max_ratio: float = constrained(1.0, gt=0, le=1)  # < 1: redraw crops dominated by one class (the authors: 0.75)
    photometric: bool = False  # mmseg's PhotoMetricDistortion (the authors: on)


@dataclass
class SegConfig:
    task: str = "seg"
    train: TrainSchema = field(default_factory=TrainSchema)
    optim: OptimSchema = field(default_factory=lambda: OptimSchema(lr=6e-5, schedule="poly", grad_clip=None))
    eval: EvalSchema = field(default_factory=EvalSchema)
    data: SegDataSchema = field(default_factory=SegDataSchema)
    model: SegModelSchema = field(default_factory=SegModelSchema)
