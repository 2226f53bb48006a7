"""bev_ddp in mmdet3d 1.x: load with ``custom_imports = dict(imports=['bev_ddp.integrations.mmdet3d'])``.

Registers, in mmdet3d's registries:

* ``MODELS``: :class:`~.model.BEVDDPMapModel` (our BEV map model, ``loss`` / ``predict`` / ``tensor``
  modes on ``Det3DDataSample``) and :class:`~.model.BEVDDPMapHead` (the map head alone, on another
  model's BEV features);
* ``TRANSFORMS``: :class:`~.transforms.BEVDDPImageAug`, :class:`~.transforms.BEVMapLabels`,
  :class:`~.transforms.PackBEVMapInputs`;
* ``METRICS``: :class:`~.metric.BEVMapIoUMetric`.

Needs the ``mmdet3d`` extra (``make mmdet3d``: mmcv 2.1.0 built from source, mmdet 3.2.0, mmdet3d
1.4.0); nothing else in bev_ddp imports this package.  Keys and matrices: :mod:`.batch`.
"""
from bev_ddp.integrations.mmdet3d import metric, model, transforms  # noqa: F401  (registration)
from bev_ddp.integrations.mmdet3d.metric import BEVMapIoUMetric
from bev_ddp.integrations.mmdet3d.model import BEVDDPMapHead, BEVDDPMapModel
from bev_ddp.integrations.mmdet3d.transforms import BEVDDPImageAug, BEVMapLabels, PackBEVMapInputs

__all__ = ["BEVDDPImageAug", "BEVDDPMapHead", "BEVDDPMapModel", "BEVMapIoUMetric", "BEVMapLabels", "PackBEVMapInputs"]
