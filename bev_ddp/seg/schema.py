"""Config schema of image segmentation (``task: seg``) and the parts depth shares with it.

Defaults are the paper's ADE20K setting with Swin-T (Table 1): 512×512 crops, FPN 256 with
GroupNorm, a 6-layer map decoder, class embedding at scale 0.01, cosine schedule, auxiliary FCN
head at 0.4, AdamW 6e-5 with poly decay.  YAML files in ``configs/seg/`` override them.
Sizes are ``[height, width]`` in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from bev_ddp.engine.schema import EvalSchema, OptimSchema, TrainSchema


@dataclass
class BackboneSchema:
    """A timm backbone built with ``pretrained=False`` and ``features_only=True``."""

    name: str = "swin_tiny_patch4_window7_224"  # or convnext_tiny, ...
    out_indices: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    kwargs: dict[str, Any] = field(default_factory=dict)  # architecture overrides (embed_dim, depths, dims ...)
    checkpoint: Optional[str] = None  # local backbone weights (torch.load weights_only)
    allow_scratch: bool = False  # a named checkpoint that is missing: random weights + warning, not an error


@dataclass
class DecoderSchema:
    """The DDP map decoder (:class:`bev_ddp.nn.MapDecoder`)."""

    embed_dims: int = 256
    depth: int = 6
    num_heads: int = 8
    num_points: int = 4
    ffn_dims: int = 1024
    dropout: float = 0.0


@dataclass
class InferenceSchema:
    """Whole-image inference (``window_crop`` null) or sliding windows of ``window_crop`` every ``window_stride``."""

    window_crop: Optional[list[int]] = None
    window_stride: Optional[list[int]] = None
    size_divisor: int = 32


@dataclass
class SegModelSchema:
    num_classes: int = 150
    backbone: BackboneSchema = field(default_factory=BackboneSchema)
    neck_channels: int = 256
    num_groups: int = 32  # GroupNorm groups in the FPN, merge and FCN head
    decoder: DecoderSchema = field(default_factory=DecoderSchema)
    label_scale: float = 0.01  # class embedding scale (Table 5b)
    schedule: str = "cosine"  # cosine | linear (Table 5c)
    td: float = 1.0  # sampler time difference (Alg. 2)
    aux_weight: float = 0.4  # auxiliary FCN head; 0 removes the head
    aux_channels: int = 256
    accumulate: bool = False  # average class probabilities over the sampling steps
    inference: InferenceSchema = field(default_factory=InferenceSchema)


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


@dataclass
class SegConfig:
    task: str = "seg"
    train: TrainSchema = field(default_factory=TrainSchema)
    optim: OptimSchema = field(default_factory=lambda: OptimSchema(lr=6e-5, schedule="poly", grad_clip=None))
    eval: EvalSchema = field(default_factory=EvalSchema)
    data: SegDataSchema = field(default_factory=SegDataSchema)
    model: SegModelSchema = field(default_factory=SegModelSchema)
