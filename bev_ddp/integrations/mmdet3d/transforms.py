"""Data transforms for mmdet3d 1.x pipelines (``TRANSFORMS`` registry).

* :class:`BEVDDPImageAug`: resize / crop / flip / rotate the multi-view images with bev_ddp's
  image augmentation (:mod:`bev_ddp.data.transforms`), writing BEVFusion's ``img_aug_matrix``.
* :class:`BEVMapLabels`: ``gt_masks_bev`` [K, X, Y] from the nuScenes map expansion, in the
  augmented lidar frame (:func:`bev_ddp.data.bev_map.rasterize_map`, both raster modes).
* :class:`PackBEVMapInputs`: mmdet3d's ``Pack3DDetInputs`` that also packs ``gt_masks_bev`` and the
  calibration keys our model reads.

BEV augmentation: mmdet3d's BEVFusion project writes the whole lidar → augmented lidar map as
``lidar_aug_matrix``; mmdet3d's core ``GlobalRotScaleTrans`` / ``RandomFlip3D`` record their steps
in ``transformation_3d_flow`` (``R``: ``points @ pcd_rotation``, ``S``: ``pcd_scale_factor``,
``T``: ``+ pcd_trans``, ``HF``: y → −y, ``VF``: x → −x).  :func:`lidar_aug_matrix` composes the
latter into the former, so labels follow either kind of pipeline.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from omegaconf import OmegaConf

from bev_ddp.data.bev_map import MAP_CLASSES, load_map, rasterize_map
from bev_ddp.data.transforms import ImageAugConfig, image_aug_matrix, to_img_aug4, warp_image
from bev_ddp.errors import InputError
from bev_ddp.integrations.mmdet3d.bev_config import load_bev_config
from mmdet3d.datasets.transforms import Pack3DDetInputs
from mmdet3d.registry import TRANSFORMS


def lidar_aug_matrix(results: dict[str, Any]) -> np.ndarray:
    """[4, 4] lidar → augmented lidar of a pipeline's results (identity when nothing augmented it)."""
    if "lidar_aug_matrix" in results:
        return np.asarray(results["lidar_aug_matrix"], dtype=np.float64)
    out = np.eye(4)
    for step in results.get("transformation_3d_flow", []):
        m = np.eye(4)
        if step == "R":  # points @ rot_T: p' = rot_T^T p
            m[:3, :3] = np.asarray(torch.as_tensor(results["pcd_rotation"]).double()).T
        elif step == "S":
            m[:3, :3] *= float(results["pcd_scale_factor"])
        elif step == "T":
            m[:3, 3] = np.asarray(results["pcd_trans"], dtype=np.float64)
        elif step == "HF":
            m[1, 1] = -1.0
        elif step == "VF":
            m[0, 0] = -1.0
        else:
            raise InputError(f"transformation_3d_flow step {step!r} is not a BEV rotation/scale/translation/flip")
        out = m @ out
    return out


@TRANSFORMS.register_module()
class BEVDDPImageAug(BaseTransform):
    """Multi-view images (``img``: N × [H, W, 3]) → ``image_size`` through bev_ddp's augmentation.

    Args:
        image_size: (H, W) of the output images.
        aug: :class:`~bev_ddp.data.transforms.ImageAugConfig` fields (ranges); evaluation takes the
            middle of each range.
        training: draw random augmentations (from numpy's global generator, which mmengine seeds
            per worker) instead of the middle setting.
        config, overrides: a bev_ddp config whose ``data.image_size`` / ``data.aug.image`` fill what
            is not given.

    Writes ``img`` (N × float32 [H, W, 3], values as loaded), ``img_shape`` and ``img_aug_matrix``
    (N × [4, 4], original pixel (u, v, d, 1) → augmented).
    """

    def __init__(self, image_size: Sequence[int] | None = None, aug: dict | None = None, training: bool = False,
                 config: str | None = None, overrides: Sequence[str] = ()):
        if config is not None:  # the model's own settings: data.image_size, data.aug.image
            cfg = load_bev_config(config, overrides)
            image_size = cfg.data.image_size if image_size is None else image_size
            aug = OmegaConf.to_container(cfg.data.aug.image) if aug is None else aug
        if image_size is None or len(image_size) != 2 or min(image_size) < 1:
            raise InputError(f"image_size must be (H, W) with positive sizes, got {image_size}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.aug = ImageAugConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in (aug or {}).items()})
        self.training = training

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        images, matrices = [], []
        for image in results["img"]:
            gen = torch.Generator().manual_seed(int(np.random.randint(2**31))) if self.training else None
            m = image_aug_matrix(tuple(image.shape[:2]), self.image_size, self.aug, gen)  # [3, 3]
            chw = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)  # [3, H, W]
            images.append(warp_image(chw, m, self.image_size).permute(1, 2, 0).numpy())  # [H', W', 3]
            matrices.append(to_img_aug4(m))
        results["img"] = images
        results["img_shape"] = self.image_size
        results["img_aug_matrix"] = matrices
        return results


@TRANSFORMS.register_module()
class BEVMapLabels(BaseTransform):
    """``gt_masks_bev`` bool [K, X, Y] of a keyframe from the nuScenes map expansion.

    Args:
        dataroot: nuScenes dataroot holding ``maps/expansion/<location>.json``.
        classes: map classes, in channel order.  xbound, ybound: label grid (min, max, step), m.
        map_raster: ``centres`` (ours) or ``bevfusion`` (the devkit's drawing as BEVFusion's loader).
        version: nuScenes table folder, read only when a sample has no ``location`` (mmdet3d's own
            info files have none): sample → scene → log → location.
        config, overrides: a bev_ddp config whose ``data.classes`` / ``xbound`` / ``ybound`` /
            ``map_raster`` fill what is not given (else nuScenes' six classes, ±50 m at 0.5 m, ``centres``).

    Reads ``ego2global`` and ``lidar_points['lidar2ego']`` (mmdet3d 1.x info keys) and the BEV
    augmentation (:func:`lidar_aug_matrix`); writes ``gt_masks_bev`` and ``lidar_aug_matrix``.
    """

    def __init__(self, dataroot: str, classes: Sequence[str] | None = None, xbound: Sequence[float] | None = None,
                 ybound: Sequence[float] | None = None, map_raster: str | None = None,
                 version: str = "v1.0-trainval", config: str | None = None, overrides: Sequence[str] = ()):
        data = load_bev_config(config, overrides).data if config is not None else None
        given = dict(classes=classes, xbound=xbound, ybound=ybound, map_raster=map_raster)
        defaults = dict(classes=MAP_CLASSES, xbound=(-50.0, 50.0, 0.5), ybound=(-50.0, 50.0, 0.5), map_raster="centres")
        value = {k: v if v is not None else (data[k] if data is not None else defaults[k]) for k, v in given.items()}
        self.dataroot = Path(dataroot)
        self.classes, self.xbound, self.ybound = tuple(value["classes"]), tuple(value["xbound"]), tuple(value["ybound"])
        self.map_raster = str(value["map_raster"])
        self.version = version
        self._maps: dict[str, Any] = {}
        self._locations: dict[str, str] | None = None

    def _location(self, results: dict[str, Any]) -> str:
        if "location" in results:
            return str(results["location"])
        if self._locations is None:
            from bev_ddp.data.create_infos import load_nuscenes

            nusc = load_nuscenes(self.dataroot, self.version)
            self._locations = {s["token"]: nusc.get("log", nusc.get("scene", s["scene_token"])["log_token"])["location"]
                               for s in nusc.sample}
        token = results.get("token")
        if token not in self._locations:
            raise InputError(f"sample {token!r} is not in the {self.version} tables of {self.dataroot}")
        return self._locations[token]

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        location = self._location(results)
        if location not in self._maps:
            self._maps[location] = load_map(self.dataroot, location)
        lidar2global = (np.asarray(results["ego2global"], dtype=np.float64)
                        @ np.asarray(results["lidar_points"]["lidar2ego"], dtype=np.float64))
        aug = lidar_aug_matrix(results)
        results["gt_masks_bev"] = rasterize_map(self._maps[location], lidar2global, classes=self.classes,
                                                xbound=self.xbound, ybound=self.ybound, lidar_aug=aug,
                                                mode=self.map_raster)  # bool [K, X, Y]
        results["lidar_aug_matrix"] = aug
        return results


@TRANSFORMS.register_module()
class PackBEVMapInputs(Pack3DDetInputs):
    """``Pack3DDetInputs`` that also packs ``gt_masks_bev`` (as ``data_sample.gt_masks_bev`` [K, X, Y])
    and the metainfo :class:`~bev_ddp.integrations.mmdet3d.model.BEVDDPMapModel` reads."""

    META_KEYS = ("token", "sample_idx", "cam2img", "lidar2cam", "cam2ego", "lidar2ego", "img_aug_matrix",
                 "lidar_aug_matrix", "img_shape", "ori_shape", "lidar_path", "img_path", "num_views")

    def __init__(self, keys: Sequence[str] = ("img", "points", "gt_masks_bev"), meta_keys: Sequence[str] = META_KEYS):
        super().__init__(keys=tuple(k for k in keys if k != "gt_masks_bev"), meta_keys=tuple(meta_keys))
        self.pack_masks = "gt_masks_bev" in keys

    def pack_single_results(self, results: dict[str, Any]) -> dict[str, Any]:
        masks = results.pop("gt_masks_bev", None)
        if "lidar_points" in results and "lidar2ego" in results["lidar_points"]:
            results.setdefault("lidar2ego", results["lidar_points"]["lidar2ego"])
        packed = super().pack_single_results(results)
        if self.pack_masks and masks is not None:
            packed["data_samples"].gt_masks_bev = torch.from_numpy(np.ascontiguousarray(masks)).bool()
        return packed
