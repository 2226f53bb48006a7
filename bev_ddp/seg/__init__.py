"""Image semantic segmentation with the DDP map decoder (``task: seg``).

Modules: :mod:`~bev_ddp.nn.image_encoder` (timm backbone → FPN → merge, shared with depth),
:mod:`~bev_ddp.seg.heads` (cross-entropy objective, auxiliary FCN head), :mod:`~bev_ddp.seg.model`
(:class:`DDPSegmentor`), :mod:`~bev_ddp.nn.dense_inference` (whole-image / sliding-window),
:mod:`~bev_ddp.seg.schema` and :mod:`~bev_ddp.seg.build` (config → modules), :mod:`~bev_ddp.seg.task`
(the engine's ``TASK``).
"""
