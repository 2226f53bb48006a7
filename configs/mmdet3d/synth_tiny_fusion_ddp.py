# The tiny camera + LiDAR DDP map model of configs/bev/synth_tiny_fusion_ddp.yaml, trained and
# evaluated by mmengine's Runner on mmdet3d 1.x info files of the synthetic town:
#
#   bev-ddp synth --out data/synth --scenes 4 --camera-every 2
#   bev-ddp prepare --dataroot data/synth --version v1.0-mini --to-mmdet3d
#   python tools/mmdet3d_run.py train configs/mmdet3d/synth_tiny_fusion_ddp.py
#
# The network, its losses and its sampler come from the bev_ddp config (model.config); the data
# pipeline is mmdet3d's (loading, multi-sweep points, GlobalRotScaleTrans) with bev_ddp's image
# augmentation, map labels and packing.  mmdet3d's LoadPointsFromMultiSweeps takes the newest sweeps
# at test time (as our `newest` protocol), drops sweep points in the 2 m square around the sensor
# (ours: 1 m circle) and draws sweeps at random in training.  GlobalRotScaleTrans restates the YAML's
# BEV ranges (rotation ±10°, scale 0.95-1.05, translation std 0.25/0.25/0.1 m); BEV flips are left out
# (RandomFlip3D handles only single-view images).  Paths are relative to the repository root.  Settings mirror the YAML config (600 iterations, batch 2,
# AdamW 2e-3, cosine after 20 warm-up iterations, grad clip 35); the last 100 iterations of
# self-aligned denoising of `bev-ddp train` are not reproduced here.
custom_imports = dict(imports=["bev_ddp.integrations.mmdet3d"], allow_failed_imports=False)
default_scope = "mmdet3d"

# classes, label grid, image size and augmentation, step counts: read from this bev_ddp config by the
# model, the transforms and the metric (config=...), never restated here
bev_ddp_config = "configs/bev/synth_tiny_fusion_ddp.yaml"
data_root = "data/synth/"
data_prefix = dict(pts="samples/LIDAR_TOP", sweeps="sweeps/LIDAR_TOP", CAM_FRONT="", CAM_FRONT_RIGHT="",
                   CAM_FRONT_LEFT="", CAM_BACK="", CAM_BACK_LEFT="", CAM_BACK_RIGHT="")

model = dict(type="BEVDDPMapModel", config=bev_ddp_config)

train_pipeline = [
    dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=5),
    dict(type="LoadPointsFromMultiSweeps", sweeps_num=1, load_dim=5, use_dim=5, pad_empty_sweeps=True,
         remove_close=True),
    dict(type="LoadMultiViewImageFromFiles", to_float32=True, num_views=6),
    dict(type="BEVDDPImageAug", config=bev_ddp_config, training=True),
    dict(type="GlobalRotScaleTrans", rot_range=[-0.17453, 0.17453], scale_ratio_range=[0.95, 1.05],
         translation_std=[0.25, 0.25, 0.1]),
    dict(type="BEVMapLabels", dataroot=data_root, config=bev_ddp_config),
    dict(type="PackBEVMapInputs", keys=["img", "points", "gt_masks_bev"]),
]
test_pipeline = [
    dict(type="LoadPointsFromFile", coord_type="LIDAR", load_dim=5, use_dim=5),
    dict(type="LoadPointsFromMultiSweeps", sweeps_num=1, load_dim=5, use_dim=5, pad_empty_sweeps=True,
         remove_close=True, test_mode=True),
    dict(type="LoadMultiViewImageFromFiles", to_float32=True, num_views=6),
    dict(type="BEVDDPImageAug", config=bev_ddp_config, training=False),
    dict(type="BEVMapLabels", dataroot=data_root, config=bev_ddp_config),
    dict(type="PackBEVMapInputs", keys=["img", "points", "gt_masks_bev"]),
]


def _dataset(split, pipeline, test_mode):
    return dict(type="NuScenesDataset", data_root=data_root, ann_file=f"infos/mmdet3d_infos_{split}.pkl",
                data_prefix=data_prefix, pipeline=pipeline, modality=dict(use_lidar=True, use_camera=True),
                test_mode=test_mode, filter_empty_gt=False, box_type_3d="LiDAR")


train_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=True),
                        dataset=_dataset("train", train_pipeline, False))
val_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                      dataset=_dataset("val", test_pipeline, True))
test_dataloader = val_dataloader
val_evaluator = dict(type="BEVMapIoUMetric", config=bev_ddp_config)
test_evaluator = val_evaluator

train_cfg = dict(type="IterBasedTrainLoop", max_iters=600, val_interval=600)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=2.0e-3, weight_decay=0.01),
                     clip_grad=dict(max_norm=35.0, norm_type=2))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.05, by_epoch=False, begin=0, end=20),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=20, end=600, T_max=580),
]
default_hooks = dict(timer=dict(type="IterTimerHook"), logger=dict(type="LoggerHook", interval=10),
                     param_scheduler=dict(type="ParamSchedulerHook"),
                     checkpoint=dict(type="CheckpointHook", interval=200, by_epoch=False),
                     sampler_seed=dict(type="DistSamplerSeedHook"))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo"))
randomness = dict(seed=0, deterministic=False)
log_level = "INFO"
load_from = None
resume = False
work_dir = "work_dirs/mmdet3d_synth_tiny_fusion_ddp"
