"""bev_ddp: BEVFusion with a diffusion map decoder (DDP).

Camera and LiDAR BEV features are fused and handed to a lightweight map decoder that denoises a
random map into a BEV semantic map in a few steps.  The same decoder serves image segmentation
(:mod:`bev_ddp.seg`) and monocular depth (:mod:`bev_ddp.depth`).
"""
__version__ = "0.1.0"
