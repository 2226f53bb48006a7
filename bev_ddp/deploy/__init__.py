"""Leaving PyTorch: the exported stages of a BEV model, the ONNX export and the onnxruntime backend.

* :mod:`bev_ddp.deploy.stages`: the camera stage and the map stage (fuser + decoder + head with
  the DDIM steps unrolled, the start map as an input) as plain traceable modules;
* :mod:`bev_ddp.deploy.export`: ``torch.onnx.export`` of those stages + ``export.json``;
* :mod:`bev_ddp.deploy.onnx_backend`: :class:`OnnxBEVModel`, the same ``predict`` as
  :class:`~bev_ddp.bev.model.BEVFusionModel` on onnxruntime (LiDAR stage in PyTorch).

See ``docs/deploy.md``.  onnx / onnxruntime / onnxscript are imported only here, on first use.
"""
