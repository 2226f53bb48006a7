"""Data: nuScenes BEV samples, map labels, augmentations, the synthetic world, image-task readers.

* :mod:`~bev_ddp.data.structures` — the sample dict, :class:`CameraGeometry`, ``collate_samples``.
* :mod:`~bev_ddp.data.nuscenes` — ``NuScenesBEVDataset`` over the info files of ``bev-ddp prepare``.
* :mod:`~bev_ddp.data.bev_map` — ``MAP_CLASSES`` and ``rasterize_map`` with the nuScenes map expansion.
* :mod:`~bev_ddp.data.transforms` — image and BEV augmentation matrices.
* :mod:`~bev_ddp.data.infos`, :mod:`~bev_ddp.data.splits` — info files (JSON) and scene splits.
* :mod:`~bev_ddp.data.lidar_io`, :mod:`~bev_ddp.data.sensors`, :mod:`~bev_ddp.data.geometry` — LiDAR
  files, sensor names and rig, rigid transforms.
* :mod:`~bev_ddp.data.synthetic` — the procedurally generated nuScenes-format town.
* :mod:`~bev_ddp.data.image_datasets` — ADE20K / Cityscapes / KITTI / NYU readers.

Modules are imported on use; importing this package loads nothing heavy.
"""
