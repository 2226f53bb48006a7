"""The exported stages of a BEV model: plain ``nn.Module`` graphs without host read-backs.

The split (``docs/deploy.md``):

1. :class:`CameraStage`: images + calibration -> camera BEV features.  The geometry (frustum ->
   augmented lidar frame) is computed in the graph from the four calibration matrices.
2. LiDAR stage: stays in PyTorch (spconv's voxelization and sparse convolutions have no ONNX
   form); :meth:`BEVFusionModel.lidar_features` gives its BEV map.
3. :class:`MapStage`: fuser + BEV decoder + head.  For the DDP head the ``steps`` DDIM steps are
   unrolled and the start map ``noise`` is an input, so one seed gives one map in every runtime;
   the output is every step's logits on the label grid.

Both stages call the model's own modules, so eager PyTorch, ``torch.compile``, ``torch.export``
and the ONNX graph compute the same thing.
"""
from __future__ import annotations

import torch
from torch import nn

from bev_ddp.bev.heads import DDPBEVHead
from bev_ddp.bev.model import BEVFusionModel, CameraEncoder
from bev_ddp.data.structures import CameraGeometry
from bev_ddp.errors import ConfigError


def noise_shape(head: DDPBEVHead, batch_size: int, encoder_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """[B, map_channels, h, w] of the DDP start map for encoder BEV maps of ``encoder_size`` (X, Y):
    on the encoder grid or the label grid, as the head's ``noise_grid`` says."""
    size = tuple(encoder_size) if head.noise_grid == "encoder" else tuple(head.transform.output_size)
    return (batch_size, head.ddp.decoder.map_channels, *size)


class CameraStage(nn.Module):
    """Images + calibration -> camera BEV features [B, C_cam, X, Y] (the model's camera encoder).

    ``forward(img [B, N, 3, H, W], intrinsics [B, N, 4, 4], camera2lidar [B, N, 4, 4],
    img_aug [B, N, 4, 4], lidar_aug [B, 4, 4], camera_valid [B, N])``: pixels, metres, lidar frame
    as :class:`~bev_ddp.data.structures.CameraGeometry`; ``camera_valid`` is 1.0 for a camera that
    counts and 0.0 for a missing one (ones: the eager model's ``camera_valid=None``, exactly).
    """

    def __init__(self, camera: CameraEncoder):
        super().__init__()
        self.camera = camera

    def forward(self, img: torch.Tensor, intrinsics: torch.Tensor, camera2lidar: torch.Tensor, img_aug: torch.Tensor,
                lidar_aug: torch.Tensor, camera_valid: torch.Tensor) -> torch.Tensor:
        geometry = CameraGeometry(intrinsics=intrinsics, camera2lidar=camera2lidar, img_aug=img_aug, lidar_aug=lidar_aug,
                                  camera2ego=camera2lidar, lidar2ego=lidar_aug)  # the last two are not read
        return self.camera(img, geometry, camera_valid)  # [B, C_cam, X, Y]


class MapStage(nn.Module):
    """Encoder BEV maps (+ the DDP start map) -> per-step logits [S, B, K, X, Y] on the label grid.

    Args:
        model: the BEV model (its fuser, decoder and head are used, not copied).
        steps: DDIM steps S to unroll (DDP head); the baseline head gives S = 1.

    ``forward(*maps, noise=None)``: one [B, C_i, X, Y] map per modality of the model, in
    ``model.modalities`` order, and for the DDP head ``noise`` [B, map_channels, h, w], the start
    map ``x_1`` on the noise grid (:meth:`~bev_ddp.nn.DDPHead.initial_noise` draws it from a seed).
    """

    def __init__(self, model: BEVFusionModel, *, steps: int = 1):
        super().__init__()
        head = model.head
        if isinstance(head, DDPBEVHead) and head.eval_protocol != "last_step":
            raise ConfigError(f"model.head.ddp.eval_protocol: the export supports last_step, got {head.eval_protocol!r}")
        self.fuser, self.decoder_backbone, self.decoder_neck = model.fuser, model.decoder_backbone, model.decoder_neck
        self.head = head
        self.steps = int(steps) if self.is_ddp else 1

    @property
    def is_ddp(self) -> bool:
        return isinstance(self.head, DDPBEVHead)

    def noise_shape(self, batch_size: int, encoder_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """[B, map_channels, h, w] of the start map for encoder BEV maps of ``encoder_size`` (X, Y)."""
        return noise_shape(self.head, batch_size, encoder_size)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        maps, noise = (inputs[:-1], inputs[-1]) if self.is_ddp else (inputs, None)
        bev = self.fuser(list(maps)) if self.fuser is not None else maps[0]  # [B, C_fused, X, Y]
        feats = self.decoder_neck(self.decoder_backbone(bev))  # [B, C_dec, X, Y]
        if not self.is_ddp:
            return self.head.logits(feats).unsqueeze(0)  # [1, B, K, X_out, Y_out]
        cond = self.head.condition(feats)  # [B, C_dec, h, w] on the noise grid
        step_logits = self.head.ddp.sample_logits(cond, noise, steps=self.steps, output_size=self.head.output_size)
        return torch.stack(step_logits)  # [S, B, K, X_out, Y_out]
