"""Config schema of monocular depth (``task: depth``).

Defaults are the KITTI Eigen setting (DepthFormer's, which the paper follows): depth range
1e-3..80 m, KITTI benchmark crop 352×1216, random 352×704 training crops, Garg evaluation crop,
horizontal-flip test-time augmentation.  ``configs/depth/`` holds KITTI, NYU and synthetic
variants.  Sizes are ``[height, width]`` in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from bev_ddp.config import constrained
from bev_ddp.nn.ddp_head_schema import DDPHeadSchema
from bev_ddp.nn.image_encoder_schema import BackboneSchema, InferenceSchema
from bev_ddp.schema import EvalSchema, OptimSchema, TrainSchema


@dataclass
class DepthModelSchema:
    min_depth: float = 1e-3  # metres; output = ReLU(logits) + min_depth
    max_depth: float = 80.0  # metres; top of the encoding range, larger ground truth is ignored
    init_depth: Optional[float] = None  # metres the output starts at (output-conv bias); default max_depth / 4
    output_unit: float = 1.0  # metres per unit of decoder output: depth = ReLU(out) * unit + min_depth
    backbone: BackboneSchema = field(default_factory=BackboneSchema)
    neck_channels: int = 256
    num_groups: int = 32
    # continuous encoding: one map channel at scale 0.1
    ddp: DDPHeadSchema = field(default_factory=lambda: DDPHeadSchema(map_channels=1, label_scale=0.1))
    target_downsample: str = constrained("masked", choices=("masked", "bilinear"))  # masked | bilinear (the authors': zeros of missing pixels blended in)
    num_bins: int = 64  # log-depth bins whose step-to-step changes make the uncertainty map
    flip_tta: bool = True
    inference: InferenceSchema = field(default_factory=InferenceSchema)
    # local whole-model weights (e.g. a run's latest.pth) loaded strictly after building; the backbone
    # file model.backbone.checkpoint is then not read (this file carries the backbone)
    checkpoint: Optional[str] = None


@dataclass
class DepthDataSchema:
    """``format``: ``kitti`` / ``nyu`` (split files) or ``synthetic`` (export of ``bev-ddp synth``)."""

    format: str = "kitti"
    root: str = "data/kitti"  # synthetic: the export folder
    image_root: str = ""  # split-file formats: image / depth roots (default: root)
    depth_root: str = ""
    train_split_file: str = "splits/eigen_train_files_with_gt.txt"  # relative to root
    val_split_file: str = "splits/eigen_test_files_with_gt.txt"
    png_scale: float = 256.0  # PNG value / png_scale = metres (KITTI 256, NYU 1000; synthetic: meta.json)
    kb_crop: bool = True
    resize: Optional[list[int]] = None
    crop_size: Optional[list[int]] = field(default_factory=lambda: [352, 704])
    flip_prob: float = 0.5
    valid_region: bool = False  # NYU training: crop to rows 45..471, cols 43..607 first
    rotate_degree: float = constrained(0.0, ge=0)  # random rotation up to this many degrees, probability 0.5 (the authors: 2.5)
    color_brightness: Optional[list[float]] = constrained(None, each_gt=0)  # colour augmentation's brightness range (KITTI 0.9..1.1, NYU 0.75..1.25)
    eval_crop: Optional[str] = "garg"  # garg | eigen | nyu | null
    # cropped: eval_crop's fractions of the (KB-cropped 352x1216) ground truth, the published protocol;
    # full: placed on the full frame the KB crop was cut from
    eval_crop_frame: str = constrained("cropped", choices=("cropped", "full"))


@dataclass
class DepthConfig:
    task: str = "depth"
    train: TrainSchema = field(default_factory=TrainSchema)
    optim: OptimSchema = field(default_factory=lambda: OptimSchema(lr=1e-4, schedule="poly", grad_clip=None))
    eval: EvalSchema = field(default_factory=EvalSchema)
    data: DepthDataSchema = field(default_factory=DepthDataSchema)
    model: DepthModelSchema = field(default_factory=DepthModelSchema)
