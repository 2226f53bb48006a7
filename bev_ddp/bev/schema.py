"""Config schema of the BEV map segmentation task (``task: bev``).

Defaults are BEVFusion's fusion-bev256d2-lss segmentation settings on nuScenes with the DDP head;
YAML files in ``configs/bev/`` override them.  Grid bounds are ``[lower, upper, step]`` in metres
(lidar frame).  The map-label grid (``data.xbound`` / ``data.ybound``) is also the output grid of
the head; the encoder grid is ``model.camera.xbound`` (the LiDAR grid must match it after the
encoder's ×8 downsampling).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from bev_ddp.config import constrained
from bev_ddp.data.nuscenes import AugConfig
from bev_ddp.diffusion.encoding import MULTI_LABEL_ENCODINGS, TARGET_POOLINGS
from bev_ddp.nn.ddp_head_schema import DDPHeadSchema
from bev_ddp.schema import EvalSchema, OptimSchema, TrainSchema

MAP_CLASSES_DEFAULT = ["drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider"]


@dataclass
class BEVDataSchema:
    """Dataset settings (nuScenes-format dataroot + info files written by ``bev-ddp prepare``)."""

    dataroot: str = "data/nuscenes"
    info_dir: str = ""  # default: <dataroot>/infos
    image_size: list[int] = constrained(factory=lambda: [256, 704], each_gt=0)  # network input (H, W), pixels
    load_sweeps: int = 10
    sweep_protocol: str = "newest"  # newest | bevfusion: random choice also at test, square near-point removal
    classes: list[str] = field(default_factory=lambda: list(MAP_CLASSES_DEFAULT))
    xbound: list[float] = field(default_factory=lambda: [-50.0, 50.0, 0.5])  # map-label grid
    ybound: list[float] = field(default_factory=lambda: [-50.0, 50.0, 0.5])
    map_raster: str = "centres"  # centres: ours (cell centres, follows scale) | bevfusion: devkit get_map_mask
    aug: AugConfig = field(default_factory=AugConfig)  # image + BEV augmentation ranges (training)


@dataclass
class CameraSchema:
    """Camera branch: timm backbone → GeneralizedLSSFPN → LSS view transform."""

    backbone: str = "swin_tiny_patch4_window7_224"  # timm model name, built with pretrained=False
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. embed_dim, depths
    backbone_checkpoint: Optional[str] = None  # local file loaded into the backbone
    allow_scratch: bool = False  # a named backbone_checkpoint that is missing: random weights + warning, not an error
    out_indices: list[int] = field(default_factory=lambda: [1, 2, 3])
    neck_channels: int = 256
    neck_start_level: int = 0
    bev_channels: int = 80
    xbound: list[float] = field(default_factory=lambda: [-51.2, 51.2, 0.4])
    ybound: list[float] = field(default_factory=lambda: [-51.2, 51.2, 0.4])
    zbound: list[float] = field(default_factory=lambda: [-10.0, 10.0, 20.0])
    dbound: list[float] = field(default_factory=lambda: [1.0, 60.0, 0.5])
    downsample: int = 2
    frustum_pixels: str = "centres"  # centres: feature-cell centres | linspace: BEVFusion's linspace(0, W - 1, fW)
    cell_index: str = "floor"  # splat cell of a frustum point: floor | trunc (BEVFusion: toward zero)


@dataclass
class LiDARSchema:
    """LiDAR branch: hard voxelization → SparseEncoder."""

    point_features: int = 5  # x, y, z, intensity, time lag
    voxel_size: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.2])
    point_cloud_range: list[float] = field(default_factory=lambda: [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0])
    max_points_per_voxel: int = 10
    max_voxels: list[int] = field(default_factory=lambda: [90000, 120000])  # train, test
    sparse_shape: list[int] = field(default_factory=lambda: [1024, 1024, 41])  # (x, y, z)
    base_channels: int = 16
    encoder_channels: list[list[int]] = field(default_factory=lambda: [[16, 16, 32], [32, 32, 64], [64, 64, 128], [128, 128]])
    encoder_paddings: list[Any] = field(default_factory=lambda: [[0, 0, 1], [0, 0, 1], [0, 0, [1, 1, 0]], [0, 0]])
    output_channels: int = 128


@dataclass
class DecoderSchema:
    """BEV decoder on the fused map: ``type`` ``second`` (SECOND + SECONDFPN) or ``resnet_lssfpn``
    (GeneralizedResNet + LSSFPN, BEVFusion's camera-only decoder)."""

    type: str = "second"
    fuser_channels: int = 256
    out_channels: list[int] = field(default_factory=lambda: [128, 256])
    layer_nums: list[int] = field(default_factory=lambda: [5, 5])
    layer_strides: list[int] = field(default_factory=lambda: [1, 2])
    fpn_channels: list[int] = field(default_factory=lambda: [256, 256])
    fpn_strides: list[int] = field(default_factory=lambda: [1, 2])
    resnet_blocks: list[list[int]] = field(default_factory=lambda: [[2, 160, 2], [2, 320, 2], [2, 640, 1]])
    lssfpn_in_indices: list[int] = field(default_factory=lambda: [-1, 0])
    lssfpn_channels: int = 256
    lssfpn_scale_factor: int = 2


@dataclass
class BEVDDPSchema(DDPHeadSchema):
    """The shared DDP head section (:class:`~bev_ddp.nn.ddp_head_schema.DDPHeadSchema`: decoder,
    schedule, ``fuse_order``, ``time_conditioning``) with BEV's measured defaults (5 layers, label scale
    0.1, 3×3 output conv, noisy map and decoder on the encoder grid: docs/uncertainty.md) and the
    BEV-only switches of the DDP authors' variant (configs/bev/reference/README.md)."""

    depth: int = 5
    label_scale: float = 0.1  # measured better than the authors' 0.01 on BEV (docs/uncertainty.md)
    head_kernel: int = 3  # 3x3 output conv: measured better than 1x1 on BEV (docs/uncertainty.md)
    steps: int = constrained(2, ge=1)  # 2 on the encoder grid: 3 steps' quality at 1.06x the baseline (README)
    noise_grid: str = "encoder"  # encoder: noisy map on the encoder grid (authors) | label: on the label grid
    decoder_grid: str = "encoder"  # encoder: decoder layers on the encoder grid, logits resized bilinearly
    #   to the label grid (needs noise_grid encoder; 128² instead of 200² queries) | label: on the label grid (authors)
    eval_protocol: str = "last_step"  # last_step: one draw, last step | mean_draws: mean sigmoid of the last step
    #   over the draws (the frontier's) | mean_draws_steps: mean sigmoid over draws x steps (authors)
    eval_draws: int = 1  # noise draws K of mean_draws_steps (authors: 4 fusion, 5 camera)
    target_pooling: str = constrained("nearest", choices=TARGET_POOLINGS)  # how the ground truth is shrunk to
    #   the noise grid: nearest (authors) | max (a coarse cell holds every class of its fine cells)
    label_encoding: str = constrained("class_embedding", choices=MULTI_LABEL_ENCODINGS)  # class_embedding
    #   (authors: mean over the K classes' embeddings) | one_hot (a channel per class; map_channels = K)


@dataclass
class HeadSchema:
    """``type``: ``ddp`` (diffusion map decoder) or ``baseline`` (BEVFusion's conv head)."""

    type: str = "ddp"
    focal_alpha: float = -1.0  # weight of positives; < 0: no weighting (BEVFusion's and DDP's; 0.25 measured worse)
    focal_gamma: float = 2.0
    input_scope: list[list[float]] = field(default_factory=lambda: [[-51.2, 51.2, 0.8], [-51.2, 51.2, 0.8]])
    ddp: BEVDDPSchema = field(default_factory=BEVDDPSchema)


@dataclass
class BEVModelSchema:
    """The model: which modalities, and each part's settings."""

    modalities: list[str] = field(default_factory=lambda: ["camera", "lidar"])
    camera: CameraSchema = field(default_factory=CameraSchema)
    lidar: LiDARSchema = field(default_factory=LiDARSchema)
    decoder: DecoderSchema = field(default_factory=DecoderSchema)
    head: HeadSchema = field(default_factory=HeadSchema)
    checkpoint: Optional[str] = None  # local full-model weights loaded after building


@dataclass
class BEVConfig:
    """Top-level config of ``task: bev``."""

    task: str = "bev"
    train: TrainSchema = field(default_factory=TrainSchema)
    optim: OptimSchema = field(default_factory=OptimSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    data: BEVDataSchema = field(default_factory=BEVDataSchema)
    model: BEVModelSchema = field(default_factory=BEVModelSchema)
