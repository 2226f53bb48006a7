"""Build :class:`BEVFusionModel` and its parts from a :class:`bev_ddp.bev.schema.BEVConfig`.

Each builder takes one config section and the sizes declared by the parts built before it
(backbone ``feature_specs`` → neck, encoder output channels → fuser → decoder), so no channel
count is written twice.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from bev_ddp.nn.backbone import build_timm_backbone
from bev_ddp.bev.camera.neck import GeneralizedLSSFPN
from bev_ddp.bev.camera.view_transform import LSSTransform
from bev_ddp.config import to_plain
from bev_ddp.data.bev_map import grid_shape
from bev_ddp.nn.checkpoint import load_model_checkpoint
from bev_ddp.bev.decoder import LSSFPN, SECOND, SECONDFPN, GeneralizedResNet
from bev_ddp.bev.fuser import ConvFuser
from bev_ddp.bev.grid import BEVGridTransform
from bev_ddp.bev.heads import BEVSegmentationHead, DDPBEVHead, MultiLabelFocalLoss
from bev_ddp.bev.model import BEVFusionModel, CameraEncoder, LiDAREncoder
from bev_ddp.errors import ConfigError, InputError

MODALITIES = ("camera", "lidar")
HEAD_TYPES = ("ddp", "baseline")
DECODER_TYPES = ("second", "resnet_lssfpn")


def build_camera_encoder(cfg: Any, *, image_size: Sequence[int]) -> CameraEncoder:
    """``cfg``: the ``model.camera`` section; ``image_size``: network input (H, W) in pixels."""
    backbone = build_timm_backbone(
        cfg.backbone, out_indices=list(cfg.out_indices), img_size=image_size, checkpoint=cfg.backbone_checkpoint,
        allow_scratch=cfg.allow_scratch,
        **(to_plain(cfg.backbone_kwargs) or {}),
    )
    neck = GeneralizedLSSFPN(
        in_specs=backbone.feature_specs, out_channels=cfg.neck_channels, start_level=cfg.neck_start_level
    )
    view_transform = LSSTransform(
        in_channels=neck.out_specs[0].channels,
        out_channels=cfg.bev_channels,
        image_size=image_size,
        feature_stride=neck.out_specs[0].stride,
        xbound=cfg.xbound,
        ybound=cfg.ybound,
        zbound=cfg.zbound,
        dbound=cfg.dbound,
        downsample=cfg.downsample,
        frustum_pixels=cfg.frustum_pixels,
        cell_index=cfg.cell_index,
    )
    return CameraEncoder(backbone=backbone, neck=neck, view_transform=view_transform)


def build_lidar_encoder(cfg: Any) -> LiDAREncoder:
    """``cfg``: the ``model.lidar`` section (imports spconv only when called)."""
    from bev_ddp.bev.lidar.sparse_encoder import SparseEncoder
    from bev_ddp.bev.lidar.voxelize import Voxelizer

    voxelizer = Voxelizer(
        voxel_size=cfg.voxel_size,
        point_cloud_range=cfg.point_cloud_range,
        num_point_features=cfg.point_features,
        max_points_per_voxel=cfg.max_points_per_voxel,
        max_voxels=tuple(cfg.max_voxels),
    )
    grid = voxelizer.grid_size
    shape = [int(v) for v in cfg.sparse_shape]
    if shape[:2] != list(grid[:2]) or shape[2] < grid[2]:
        raise ConfigError(
            f"model.lidar.sparse_shape {shape} does not cover the voxel grid {list(grid)} of "
            f"point_cloud_range / voxel_size"
        )
    encoder = SparseEncoder(
        in_channels=cfg.point_features,
        sparse_shape=shape,
        base_channels=cfg.base_channels,
        encoder_channels=[list(c) for c in cfg.encoder_channels],
        encoder_paddings=[list(p) for p in cfg.encoder_paddings],
        output_channels=cfg.output_channels,
    )
    return LiDAREncoder(voxelizer=voxelizer, sparse_encoder=encoder)


def build_head(cfg: Any, *, in_channels: int, classes: Sequence[str], xbound: Sequence[float], ybound: Sequence[float]) -> nn.Module:
    """``cfg``: the ``model.head`` section; the output grid is the label grid (xbound, ybound)."""
    grid_transform = BEVGridTransform(input_scope=[list(s) for s in cfg.input_scope], output_scope=[list(xbound), list(ybound)])
    loss = MultiLabelFocalLoss(alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    if cfg.type == "baseline":
        return BEVSegmentationHead(grid_transform=grid_transform, in_channels=in_channels, classes=classes, loss=loss)
    if cfg.type == "ddp":
        from bev_ddp.diffusion.encoding import build_multi_label_encoder
        from bev_ddp.nn.ddp_head_schema import build_ddp_head, build_map_decoder

        d, key = cfg.ddp, "model.head.ddp"
        try:  # before the decoder is built; the head checks the same settings again, as values
            DDPBEVHead.check_settings(noise_grid=d.noise_grid, decoder_grid=d.decoder_grid,
                                      eval_protocol=d.eval_protocol, eval_draws=d.eval_draws)
        except InputError as exc:  # messages start with the setting's name
            raise ConfigError(f"{key}.{exc}") from exc
        fuse_transform = None
        if d.noise_grid == "encoder" and d.decoder_grid == "label":  # fuse on the encoder grid, layers on the label grid
            fuse_transform = BEVGridTransform(input_scope=[list(s) for s in cfg.input_scope],
                                              output_scope=[list(xbound), list(ybound)])
        decoder = build_map_decoder(d, cond_channels=in_channels, out_channels=len(classes), key=key,
                                    fuse_transform=fuse_transform)
        try:
            encoder = build_multi_label_encoder(str(getattr(d, "label_encoding", "class_embedding")),
                                                num_classes=len(classes), dims=d.map_channels, scale=d.label_scale,
                                                target_pooling=str(getattr(d, "target_pooling", "nearest")))
        except InputError as exc:
            raise ConfigError(f"{key}.{exc}") from exc
        ddp = build_ddp_head(d, decoder=decoder, label_encoder=encoder, objective=loss, key=key)
        return DDPBEVHead(grid_transform=grid_transform, ddp=ddp, classes=classes, noise_grid=d.noise_grid,
                          decoder_grid=d.decoder_grid, eval_protocol=d.eval_protocol, eval_draws=d.eval_draws)
    raise ConfigError(f"model.head.type must be one of {', '.join(HEAD_TYPES)}, got {cfg.type!r}")


def build_decoder(cfg: Any, *, in_channels: int) -> tuple[nn.Module, nn.Module]:
    """``cfg``: the ``model.decoder`` section → (backbone, neck) on a BEV map of ``in_channels``."""
    if cfg.type == "second":
        second = SECOND(in_channels=in_channels, out_channels=list(cfg.out_channels), layer_nums=list(cfg.layer_nums),
                        layer_strides=list(cfg.layer_strides))
        fpn = SECONDFPN(in_channels=list(cfg.out_channels), out_channels=list(cfg.fpn_channels),
                        upsample_strides=list(cfg.fpn_strides))
        return second, fpn
    if cfg.type == "resnet_lssfpn":
        resnet = GeneralizedResNet(in_channels=in_channels, blocks=[list(b) for b in cfg.resnet_blocks])
        indices = list(cfg.lssfpn_in_indices)
        lssfpn = LSSFPN(in_indices=indices, in_channels=[resnet.out_channels[i] for i in indices],
                        out_channels=cfg.lssfpn_channels, scale_factor=cfg.lssfpn_scale_factor)
        return resnet, lssfpn
    raise ConfigError(f"model.decoder.type must be one of {', '.join(DECODER_TYPES)}, got {cfg.type!r}")


def build_bev_model(cfg: Any) -> BEVFusionModel:
    """The whole model from a full ``BEVConfig`` (``cfg.model`` and ``cfg.data``)."""
    m = cfg.model
    modalities = list(m.modalities)
    unknown = [x for x in modalities if x not in MODALITIES]
    if unknown or not modalities or len(set(modalities)) != len(modalities):
        raise ConfigError(f"model.modalities must be a non-empty subset of {list(MODALITIES)}, got {modalities}")
    camera = build_camera_encoder(m.camera, image_size=list(cfg.data.image_size)) if "camera" in modalities else None
    lidar = build_lidar_encoder(m.lidar) if "lidar" in modalities else None
    encoders = [e for e in (camera, lidar) if e is not None]
    _check_encoder_grids(camera, lidar)
    if len(encoders) == 2:
        fuser: ConvFuser | None = ConvFuser(in_channels=[e.out_channels for e in encoders], out_channels=m.decoder.fuser_channels)
        bev_channels = fuser.out_channels
    else:
        fuser, bev_channels = None, encoders[0].out_channels
    backbone, neck = build_decoder(m.decoder, in_channels=bev_channels)
    head = build_head(m.head, in_channels=neck.out_channels, classes=list(cfg.data.classes), xbound=cfg.data.xbound,
                      ybound=cfg.data.ybound)
    model = BEVFusionModel(camera=camera, lidar=lidar, fuser=fuser, decoder_backbone=backbone, decoder_neck=neck,
                           head=head)
    if m.checkpoint:  # not strict: a converted BEVFusion file leaves a DDP head to start from scratch
        load_model_checkpoint(model, m.checkpoint, strict=False)
    return model


def _check_encoder_grids(camera: CameraEncoder | None, lidar: LiDAREncoder | None) -> None:
    if camera is None or lidar is None:
        return
    cam = tuple(camera.view_transform.bev_size)
    lid = tuple(lidar.sparse_encoder.output_size)
    if cam != lid:
        raise ConfigError(
            f"camera BEV grid {cam} (model.camera xbound/ybound/downsample) and LiDAR BEV grid {lid} "
            "(model.lidar sparse_shape and strides) must match for fusion"
        )


def label_grid(xbound: Sequence[float], ybound: Sequence[float]) -> tuple[int, int]:
    """(X, Y) cells of the map-label grid."""
    return grid_shape(xbound, ybound)
