"""nuScenes keyframes as BEV map segmentation samples (camera + LiDAR).

Reads the info files written by ``bev-ddp prepare`` (JSON, see :mod:`bev_ddp.data.infos`) and
yields the sample dict of :mod:`bev_ddp.data.structures`: six normalised images, their
:class:`CameraGeometry`, LiDAR points with sweeps in the keyframe lidar frame, and six BEV map
masks rasterised with the nuScenes map expansion.

Bad input: a missing or unreadable camera image gives a zero image with ``camera_valid`` False
and a logged warning; a missing or truncated sweep is skipped with a warning; a missing or
truncated keyframe LiDAR file raises :class:`InputError` naming it (or, with
``allow_missing_lidar=True``, gives an empty cloud and a warning); an unknown map location or a
malformed map file raises :class:`InputError` naming it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from bev_ddp.data.bev_map import CLASS_LAYERS, MAP_CLASSES, MAP_RASTER_MODES, load_map, rasterize_map
from bev_ddp.data.infos import check_records, read_infos
from bev_ddp.data.lidar_io import load_points
from bev_ddp.data.sample_builder import SampleBuilder, as_4x4
from bev_ddp.data.sensors import CAMERA_NAMES
from bev_ddp.data.transforms import BEVAugConfig, ImageAugConfig, bev_aug_matrix, to_img_aug4
from bev_ddp.errors import InputError
from bev_ddp.nn.backbone import IMAGENET_NORMALISATION, ImageNormalisation

log = logging.getLogger(__name__)

SWEEP_PROTOCOLS = ("newest", "bevfusion")
SWEEP_MIN_RADIUS = 1.0  # m: sweep points this close to the sensor (the ego car) are dropped


@dataclass(frozen=True)
class AugConfig:
    """Training augmentations; ``training=False`` datasets use the deterministic middle setting."""

    image: ImageAugConfig = field(default_factory=ImageAugConfig)
    bev: BEVAugConfig = field(default_factory=BEVAugConfig)


class NuScenesBEVDataset(Dataset):
    """Keyframes of one split as BEV samples.

    Args:
        info_path: info JSON of the split (``bev-ddp prepare``), or the records themselves (a list of
            info dicts, e.g. one record given to the Python API).
        dataroot: nuScenes dataroot the info paths are relative to.
        image_size: (H, W) of the augmented images.
        training: random augmentations (image and BEV) when True.
        aug: augmentation ranges.
        load_sweeps: LiDAR frames per sample including the keyframe (10 = keyframe + 9 sweeps).
        classes: map classes of ``gt_masks_bev``.
        xbound, ybound: (min, max, step) of the BEV label grid, m.
        seed: base seed of the augmentation generator (combined with the epoch and index).
        allow_missing_lidar: a missing or truncated keyframe LiDAR gives empty points (with a
            warning) instead of an error.
        allow_outside_dataroot: accept info paths that resolve outside ``dataroot``.
        with_labels: rasterise ``gt_masks_bev`` (False at pure inference).
        sweep_protocol: ``newest`` (the ``load_sweeps - 1`` newest sweeps, points within 1 m of the
            sensor dropped) or ``bevfusion`` (that many sweeps drawn at random from the info's,
            also at evaluation, seeded by ``seed``, epoch and index; points in the 2 m square
            around the sensor dropped), as BEVFusion's ``LoadPointsFromMultiSweeps``.
        map_raster: ``centres`` (ours: cell centres, follows every BEV augmentation) or
            ``bevfusion`` (the devkit's drawing as BEVFusion's loader calls it, see
            :mod:`bev_ddp.data.bev_map`).
        normalisation: the image encoder's mean / std (:func:`bev_ddp.nn.backbone.image_normalisation`).
    """

    def __init__(
        self,
        info_path: str | Path | Sequence[dict[str, Any]],
        dataroot: str | Path,
        image_size: tuple[int, int] = (256, 704),
        training: bool = False,
        aug: AugConfig = AugConfig(),
        load_sweeps: int = 10,
        classes: Sequence[str] = MAP_CLASSES,
        xbound: Sequence[float] = (-50.0, 50.0, 0.5),
        ybound: Sequence[float] = (-50.0, 50.0, 0.5),
        *,
        seed: int = 0,
        allow_missing_lidar: bool = False,
        allow_outside_dataroot: bool = False,
        with_labels: bool = True,
        map_raster: str = "centres",
        sweep_protocol: str = "newest",
        normalisation: ImageNormalisation = IMAGENET_NORMALISATION,
    ) -> None:
        if sweep_protocol not in SWEEP_PROTOCOLS:
            raise ValueError(f"sweep_protocol must be one of {', '.join(SWEEP_PROTOCOLS)}, got {sweep_protocol!r}")
        if map_raster not in MAP_RASTER_MODES:
            raise ValueError(f"map_raster must be one of {', '.join(MAP_RASTER_MODES)}, got {map_raster!r}")
        if load_sweeps < 1:
            raise InputError("load_sweeps counts the keyframe and must be >= 1")
        unknown = [c for c in classes if c not in CLASS_LAYERS]
        if unknown:
            raise InputError(f"unknown map classes {unknown}; choose from {list(CLASS_LAYERS)}")
        if len(image_size) != 2 or min(image_size) < 1:
            raise InputError(f"image_size must be (H, W) with positive sizes, got {tuple(image_size)}")
        self.dataroot = Path(dataroot)
        if isinstance(info_path, (str, Path)):
            self.info_path = Path(info_path)
            self.metadata, self.infos = read_infos(self.info_path, dataroot=self.dataroot,
                                                   allow_outside_dataroot=allow_outside_dataroot)
        else:  # records in memory: checked as the info file's are
            self.info_path = Path("<records>")
            self.metadata, self.infos = {}, check_records(list(info_path), dataroot=self.dataroot,
                                                          allow_outside_dataroot=allow_outside_dataroot)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.builder = SampleBuilder(image_size=self.image_size, image_aug=aug.image, normalisation=normalisation)
        self.training = training
        self.aug = aug
        self.load_sweeps = load_sweeps
        self.classes = tuple(classes)
        self.xbound, self.ybound = tuple(xbound), tuple(ybound)
        self.seed = seed
        self.epoch = 0
        self.allow_missing_lidar = allow_missing_lidar
        self.with_labels = with_labels
        self.map_raster = map_raster
        self.sweep_protocol = sweep_protocol
        self._maps: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}  # maps are reloaded lazily in each worker process
        return state

    def __len__(self) -> int:
        return len(self.infos)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (the engine calls it once per epoch)."""
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator | None:
        if not self.training:
            return None
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    def _map(self, location: str):
        if location not in self._maps:
            self._maps[location] = load_map(self.dataroot, location)
        return self._maps[location]

    # --- images -----------------------------------------------------------------------------
    def check_camera_images(self) -> None:
        """Refuse an info file none of whose camera images is a non-empty file (a camera model would
        train and evaluate on black images): :class:`InputError` naming the file and an example.

        Stops at the first usable image, so a normal dataset costs one ``stat``; a sample whose
        images are missing or unreadable still gets zero images and a warning (``__getitem__``).
        """
        example = None
        for info in self.infos:
            for cam in info["cams"].values():
                path = self.dataroot / cam["path"]
                try:
                    if path.is_file() and path.stat().st_size > 0:
                        return
                    problem = f"{path} is empty (0 bytes)" if path.is_file() else f"{path} is not a file"
                except OSError as exc:
                    problem = f"{path}: {exc.strerror or exc}"
                example = example or problem
        if example is not None:
            raise InputError(f"info file {self.info_path}: none of its camera images can be read "
                             f"(e.g. {example}); a camera model would see black images only")

    def _load_image(self, cam: dict[str, Any]) -> torch.Tensor | None:
        path = self.dataroot / cam["path"]
        try:
            with Image.open(path) as im:
                rgb = np.array(im.convert("RGB"), dtype=np.uint8)
        except FileNotFoundError:
            log.warning("camera image missing, using a zero image: %s", path)
            return None
        except (UnidentifiedImageError, OSError) as exc:
            log.warning("camera image unreadable (%s), using a zero image: %s", exc, path)
            return None
        if rgb.shape[:2] != (cam["height"], cam["width"]):
            raise InputError(
                f"camera image {path} is {rgb.shape[1]}x{rgb.shape[0]} but its calibration is for "
                f"{cam['width']}x{cam['height']}"
            )
        return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0  # [3, H, W]

    def _cameras(self, info: dict[str, Any], gen: torch.Generator | None, meta: dict[str, Any]):
        images, valid, intrinsics, cam2lidar, cam2ego, img_aug = [], [], [], [], [], []
        for name in CAMERA_NAMES:
            cam = info["cams"].get(name)
            if cam is None:
                raise InputError(f"info file {self.info_path}: sample {info['token']} has no {name}")
            image = self._load_image(cam)
            x, m = self.builder.camera(image, (int(cam["height"]), int(cam["width"])), gen)
            images.append(x)
            valid.append(image is not None)
            if image is None:
                meta["missing_cameras"].append(name)
            intrinsics.append(cam["intrinsics"])
            cam2lidar.append(cam["camera2lidar"])
            cam2ego.append(cam["camera2ego"])
            img_aug.append(to_img_aug4(m))
        return images, valid, intrinsics, cam2lidar, cam2ego, img_aug

    # --- points -----------------------------------------------------------------------------
    def _sweeps(self, info: dict[str, Any], index: int) -> list[dict[str, Any]]:
        """The sweeps to load: the newest, or (``bevfusion``) a seeded random choice of them."""
        wanted, sweeps = self.load_sweeps - 1, info["sweeps"]
        if self.sweep_protocol == "newest" or len(sweeps) <= wanted:
            return sweeps[:wanted]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index, 1]))
        return [sweeps[int(i)] for i in rng.choice(len(sweeps), wanted, replace=False)]

    def _near_sensor(self, xy: np.ndarray) -> np.ndarray:
        """bool [N]: sweep points too close to the sensor (circle, or BEVFusion's square)."""
        if self.sweep_protocol == "bevfusion":
            return (np.abs(xy) < SWEEP_MIN_RADIUS).all(axis=1)
        return np.linalg.norm(xy, axis=1) < SWEEP_MIN_RADIUS

    def _points(self, info: dict[str, Any], meta: dict[str, Any], index: int = 0) -> np.ndarray:
        path = self.dataroot / info["lidar_path"]
        try:
            key = load_points(path)
        except InputError:
            if not self.allow_missing_lidar:
                raise
            log.warning("keyframe LiDAR missing or corrupt, using no points (degraded mode): %s", path)
            meta["lidar_missing"] = True
            key = np.zeros((0, 5), np.float32)
        clouds = [np.concatenate([key[:, :4], np.zeros((len(key), 1), np.float32)], axis=1)]
        for sweep in self._sweeps(info, index):
            sweep_path = self.dataroot / sweep["path"]
            try:
                pts = load_points(sweep_path)
            except InputError as exc:
                log.warning("skipping sweep: %s", exc)
                meta["skipped_sweeps"].append(sweep["path"])
                continue
            pts = pts[~self._near_sensor(pts[:, :2])]
            transform = np.asarray(sweep["sensor2lidar"], dtype=np.float64)
            xyz = pts[:, :3].astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
            lag = np.full((len(pts), 1), float(sweep["time_lag"]))
            clouds.append(np.concatenate([xyz, pts[:, 3:4], lag], axis=1).astype(np.float32))
        return np.concatenate(clouds, axis=0)  # [N, 5]

    # --- sample -----------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.infos[index]
        gen = self._generator(index)
        meta: dict[str, Any] = {
            "token": info["token"], "scene": info["scene_name"], "timestamp": info["timestamp"],
            "location": info["location"], "index": index, "missing_cameras": [], "skipped_sweeps": [],
            "lidar_missing": False,
        }
        images, valid, intrinsics, cam2lidar, cam2ego, img_aug = self._cameras(info, gen, meta)
        lidar_aug = bev_aug_matrix(self.aug.bev, gen)
        points = self._points(info, meta, index)
        xyz = points[:, :3].astype(np.float64) @ lidar_aug[:3, :3].T + lidar_aug[:3, 3]
        points = np.concatenate([xyz.astype(np.float32), points[:, 3:]], axis=1)

        lidar2ego = as_4x4(info["lidar2ego"])
        sample = self.builder.assemble(images=images, camera_valid=valid, intrinsics=intrinsics,
                                       camera2lidar=cam2lidar, camera2ego=cam2ego, img_aug=img_aug, lidar_aug=lidar_aug,
                                       lidar2ego=lidar2ego, points=points, meta=meta)
        if self.with_labels:
            lidar2global = as_4x4(info["ego2global"]) @ lidar2ego
            masks = rasterize_map(self._map(info["location"]), lidar2global, classes=self.classes, xbound=self.xbound,
                                  ybound=self.ybound, lidar_aug=lidar_aug, mode=self.map_raster)
            sample["gt_masks_bev"] = torch.from_numpy(masks.astype(np.float32))  # [C, X, Y]
        return sample
