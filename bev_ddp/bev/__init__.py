"""BEVFusion map segmentation with a DDP diffusion head.

Pipeline (BEV tensors are ``[B, C, X, Y]`` in the augmented lidar frame)::

    images  -> camera.backbone -> camera.neck -> camera.view_transform (LSS + bev_pool) ─┐
    points  -> lidar.voxelize  -> lidar.sparse_encoder ─────────────────────────────────┤
                                                                      fuser.ConvFuser <─┘
            -> decoder.SECOND -> decoder.SECONDFPN -> heads (baseline or DDP, grid transform inside)

:class:`bev_ddp.bev.model.BEVFusionModel` assembles the parts; :mod:`bev_ddp.bev.build` builds them
from a :class:`bev_ddp.bev.schema.BEVConfig`; :mod:`bev_ddp.bev.task` exposes ``TASK`` to the engine.
"""
