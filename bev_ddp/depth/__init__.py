"""Monocular depth estimation with the DDP map decoder (``task: depth``).

Modules: :mod:`~bev_ddp.depth.losses` (SigLoss, ReLU + min_depth output),
:mod:`~bev_ddp.depth.encoding` (continuous encoding read through that output),
:mod:`~bev_ddp.depth.model` (:class:`DDPDepthEstimator`, flip test-time augmentation),
:mod:`~bev_ddp.depth.schema`, :mod:`~bev_ddp.depth.build`, :mod:`~bev_ddp.depth.task`.
The image encoder and dense inference are shared with segmentation (:mod:`bev_ddp.nn.image_encoder`,
:mod:`bev_ddp.nn.dense_inference`).
"""
