"""Readers for the image segmentation and monocular depth datasets (pipelines: :mod:`~bev_ddp.data.image_pipelines`).

Folder layouts read (as distributed by their authors):

* **ADE20K** (``ADEChallengeData2016``)::

      ROOT/images/{training,validation}/ADE_*.jpg
      ROOT/annotations/{training,validation}/ADE_*.png     # 0 = unlabeled, 1..150 = classes

  Label ``0`` becomes ignore (255) and the classes shift to ``0..149`` ("reduce zero label").
* **Cityscapes**::

      ROOT/leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png
      ROOT/gtFine/{train,val,test}/<city>/<stem>_gtFine_labelTrainIds.png   # preferred, or
      ROOT/gtFine/{train,val,test}/<city>/<stem>_gtFine_labelIds.png        # mapped to the 19 train ids

* **KITTI Eigen depth** and **NYU-Depth v2**: a split file, one sample per line
  ``<image path> <depth path> <focal>`` (paths relative to the image / depth roots, ``None`` for a
  frame without ground truth, which is skipped); depth PNGs are uint16, metres = value /
  ``depth_scale`` (KITTI 256, NYU 1000), 0 = no measurement.
* **Synthetic world export** (:func:`bev_ddp.data.synthetic.export_image_tasks`)::

      ROOT/meta.json                                   # {"classes": [...], "depth_scale": 1000, ...}
      ROOT/images/<split>/<name>.jpg
      ROOT/labels/<split>/<name>.png                   # class ids, 255 = ignore
      ROOT/depth/<split>/<name>.png                    # uint16 millimetres, 0 = invalid

Samples are dicts: ``img`` float32 [3, H, W] (ImageNet-normalised), ``gt_seg`` int64 [H, W]
(255 = ignore) or ``gt_depth`` float32 [1, H, W] (metres, 0 = invalid), ``ori_size`` int64 [2]
(the size the ground truth is scored at) and ``meta`` (names, paths, augmentation flags).
Randomness of training augmentation comes from a ``torch.Generator`` seeded from
``(seed, epoch, index)``, so a run is reproducible whatever the worker layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from bev_ddp.data.image_pipelines import IGNORE_INDEX, DepthPipeline, SegPipeline, normalise_image
from bev_ddp.errors import InputError
from bev_ddp.files import read_json


ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# Cityscapes label id -> train id (cityscapesScripts labels.py); every other id is ignored
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


# ------------------------------------------------------------------------------------------ file IO
def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"image file {path} is corrupt or not an image: {exc}") from exc
    return img


def read_rgb(path: Path) -> torch.Tensor:
    """uint8 [3, H, W] RGB image."""
    arr = np.asarray(_open(path).convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]


def read_label(path: Path) -> torch.Tensor:
    """int64 [H, W] class ids from a single-channel (or palette) PNG."""
    img = _open(path)
    if img.mode not in ("L", "P", "I", "I;16"):
        raise InputError(f"label file {path} must be a single-channel PNG, got mode {img.mode}")
    return torch.from_numpy(np.asarray(img).astype(np.int64))


def read_depth(path: Path, depth_scale: float) -> torch.Tensor:
    """float32 [H, W] depth in metres from a uint16 PNG (value / ``depth_scale``; 0 = invalid)."""
    img = _open(path)
    arr = np.asarray(img)
    if arr.ndim != 2 or arr.dtype not in (np.uint16, np.int32, np.uint8):
        raise InputError(f"depth file {path} must be a single-channel 16-bit PNG, got mode {img.mode}")
    return torch.from_numpy(arr.astype(np.float32) / float(depth_scale))


# ------------------------------------------------------------------------------------ item listing
@dataclass(frozen=True)
class SegItem:
    image: Path
    label: Path
    name: str


@dataclass(frozen=True)
class DepthItem:
    image: Path
    depth: Path
    name: str
    focal: float = 0.0


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what} folder not found: {path}")
    return path


def ade20k_items(root: str | Path, split: str) -> list[SegItem]:
    """ADEChallengeData2016 pairs of ``split`` (``training`` / ``validation``; ``train`` / ``val`` accepted)."""
    split = {"train": "training", "val": "validation"}.get(split, split)
    root = Path(root)
    img_dir = _require_dir(root / "images" / split, "ADE20K image")
    ann_dir = _require_dir(root / "annotations" / split, "ADE20K annotation")
    items = []
    for img in sorted(img_dir.glob("*.jpg")):
        label = ann_dir / f"{img.stem}.png"
        if not label.is_file():
            raise InputError(f"ADE20K annotation missing for {img}: expected {label}")
        items.append(SegItem(img, label, img.stem))
    return items


def cityscapes_items(root: str | Path, split: str) -> list[SegItem]:
    """Cityscapes fine pairs of ``split``; prefers ``*_labelTrainIds.png``, else ``*_labelIds.png``."""
    root = Path(root)
    img_dir = _require_dir(root / "leftImg8bit" / split, "Cityscapes image")
    gt_dir = _require_dir(root / "gtFine" / split, "Cityscapes gtFine")
    items = []
    for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        city = img.parent.name
        train_ids = gt_dir / city / f"{stem}_gtFine_labelTrainIds.png"
        label_ids = gt_dir / city / f"{stem}_gtFine_labelIds.png"
        label = train_ids if train_ids.is_file() else label_ids
        if not label.is_file():
            raise InputError(f"Cityscapes ground truth missing for {img}: expected {train_ids} or {label_ids}")
        items.append(SegItem(img, label, stem))
    return items


def split_file_items(split_file: str | Path, *, image_root: str | Path, depth_root: str | Path) -> list[DepthItem]:
    """Depth pairs from a KITTI-Eigen / NYU split file (``image depth focal`` per line)."""
    split_file = Path(split_file)
    if not split_file.is_file():
        raise InputError(f"depth split file not found: {split_file}")
    items = []
    for n, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise InputError(f"{split_file}:{n}: expected '<image> <depth> [focal]', got {line!r}")
        if parts[1] == "None":
            continue  # frame without ground truth (KITTI Eigen test list)
        try:
            focal = float(parts[2]) if len(parts) > 2 else 0.0
        except ValueError as exc:
            raise InputError(f"{split_file}:{n}: focal {parts[2]!r} is not a number") from exc
        image = Path(image_root) / parts[0].lstrip("/")
        depth = Path(depth_root) / parts[1].lstrip("/")
        items.append(DepthItem(image, depth, parts[0].lstrip("/").replace("/", "_").rsplit(".", 1)[0], focal))
    return items


def read_export_meta(root: str | Path) -> dict[str, Any]:
    """``meta.json`` of a synthetic image-task export (classes, depth scale)."""
    path = Path(root) / "meta.json"
    meta = read_json(path, what="image-task export meta file")
    if not isinstance(meta, dict) or "classes" not in meta:
        raise InputError(f"image-task export meta file {path} has no 'classes' list")
    return meta


def export_items(root: str | Path, split: str, kind: str) -> list[tuple[Path, Path, str]]:
    """(image, target, name) triples of a synthetic export; ``kind`` is ``labels`` or ``depth``."""
    root = Path(root)
    img_dir = _require_dir(root / "images" / split, "image-task export image")
    tgt_dir = _require_dir(root / kind / split, f"image-task export {kind}")
    items = []
    for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        target = tgt_dir / f"{img.stem}.png"
        if not target.is_file():
            raise InputError(f"image-task export {kind} file missing for {img}: expected {target}")
        items.append((img, target, img.stem))
    return items


# ------------------------------------------------------------------------------------ pipelines
class _AugmentedDataset(Dataset):
    """Augmentation generator per item from ``(seed, epoch, index, torch.initial_seed())``.

    The training engine seeds the global torch RNG per item from ``(train seed, epoch, index)``
    (:class:`bev_ddp.engine.data.SeededDataset`), which ``torch.initial_seed()`` reflects, so
    augmentation changes every epoch there; outside the engine, :meth:`set_epoch` does the same.
    """

    def __init__(self, *, training: bool, seed: int) -> None:
        self.training, self.seed, self.epoch = training, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator:
        entropy = [self.seed, self.epoch, index, torch.initial_seed() % 2**63]
        state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))


class ImageSegDataset(_AugmentedDataset):
    """Semantic segmentation pairs.

    Args:
        items: image / label files.
        classes: class names, index = train id.
        pipeline: augmentation.
        label_map: optional raw id -> train id table; unlisted ids become ignore (Cityscapes ``labelIds``).
        reduce_zero_label: label 0 -> ignore, others shift down by one (ADE20K).
    """

    def __init__(self, *, items: Sequence[SegItem], classes: Sequence[str], pipeline: SegPipeline,
                 training: bool = False, seed: int = 0, label_map: Optional[dict[int, int]] = None,
                 label_map_suffix: str = "", reduce_zero_label: bool = False) -> None:
        super().__init__(training=training, seed=seed)
        if not items:
            raise InputError("segmentation dataset holds no image")
        self.items, self.classes, self.pipeline = list(items), tuple(classes), pipeline
        self.reduce_zero_label = reduce_zero_label
        self.label_map_suffix = label_map_suffix
        self._lut: Optional[torch.Tensor] = None
        if label_map is not None:
            lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
            for raw, train_id in label_map.items():
                lut[raw] = train_id
            self._lut = lut

    def __len__(self) -> int:
        return len(self.items)

    def _convert(self, label: torch.Tensor, path: Path) -> torch.Tensor:
        if self._lut is not None and path.name.endswith(self.label_map_suffix):
            label = self._lut[label.clamp(0, 255)]
        if self.reduce_zero_label:
            label = torch.where(label == 0, IGNORE_INDEX, label - 1)
            label = torch.where(label == IGNORE_INDEX - 1, IGNORE_INDEX, label)
        bad = (label != IGNORE_INDEX) & ((label < 0) | (label >= len(self.classes)))
        if bad.any():
            raise InputError(
                f"label file {path} holds ids {sorted(set(label[bad].unique().tolist()))[:5]} outside "
                f"0..{len(self.classes) - 1} and ignore {IGNORE_INDEX}"
            )
        return label

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        img = read_rgb(item.image)
        label = self._convert(read_label(item.label), item.label)
        if tuple(img.shape[-2:]) != tuple(label.shape):
            raise InputError(f"label {item.label} is {tuple(label.shape)} but image {item.image} is "
                             f"{tuple(img.shape[-2:])}")
        ori_size = torch.tensor(label.shape, dtype=torch.int64)
        img, label, flags = self.pipeline(img, label, training=self.training, gen=self._generator(index))
        if self.training:
            ori_size = torch.tensor(label.shape, dtype=torch.int64)
        return {"img": normalise_image(img), "gt_seg": label.long(), "ori_size": ori_size,
                "meta": {"name": item.name, "image_path": str(item.image), "label_path": str(item.label), **flags}}


class ImageDepthDataset(_AugmentedDataset):
    """Monocular depth pairs; ``depth_scale`` converts PNG values to metres."""

    def __init__(self, *, items: Sequence[DepthItem], depth_scale: float, pipeline: DepthPipeline,
                 training: bool = False, seed: int = 0, max_depth: Optional[float] = None) -> None:
        super().__init__(training=training, seed=seed)
        if not items:
            raise InputError("depth dataset holds no image")
        if depth_scale <= 0:
            raise InputError(f"depth_scale must be positive, got {depth_scale}")
        self.items, self.depth_scale, self.pipeline, self.max_depth = list(items), depth_scale, pipeline, max_depth

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        img = read_rgb(item.image)
        depth = read_depth(item.depth, self.depth_scale)
        if tuple(img.shape[-2:]) != tuple(depth.shape):
            raise InputError(f"depth {item.depth} is {tuple(depth.shape)} but image {item.image} is "
                             f"{tuple(img.shape[-2:])}")
        img, depth, flags = self.pipeline(img, depth, training=self.training, gen=self._generator(index))
        if self.max_depth is not None:
            depth = torch.where(depth > self.max_depth, torch.zeros_like(depth), depth)
        return {"img": normalise_image(img), "gt_depth": depth[None].float(),
                "ori_size": torch.tensor(depth.shape, dtype=torch.int64),
                "meta": {"name": item.name, "image_path": str(item.image), "depth_path": str(item.depth),
                         "focal": item.focal, **flags}}


# ------------------------------------------------------------------------- named dataset builders
def ade20k_dataset(root: str | Path, split: str, *, pipeline: SegPipeline, training: bool = False,
                   seed: int = 0) -> ImageSegDataset:
    return ImageSegDataset(items=ade20k_items(root, split), classes=ADE20K_CLASSES, pipeline=pipeline,
                           training=training, seed=seed, reduce_zero_label=True)


def cityscapes_dataset(root: str | Path, split: str, *, pipeline: SegPipeline, training: bool = False,
                       seed: int = 0) -> ImageSegDataset:
    return ImageSegDataset(items=cityscapes_items(root, split), classes=CITYSCAPES_CLASSES, pipeline=pipeline,
                           training=training, seed=seed, label_map=CITYSCAPES_ID_TO_TRAIN_ID,
                           label_map_suffix="_gtFine_labelIds.png")


def synthetic_seg_dataset(root: str | Path, split: str, *, pipeline: SegPipeline, training: bool = False,
                          seed: int = 0) -> ImageSegDataset:
    meta = read_export_meta(root)
    items = [SegItem(img, lbl, name) for img, lbl, name in export_items(root, split, "labels")]
    return ImageSegDataset(items=items, classes=meta["classes"], pipeline=pipeline, training=training, seed=seed)


def depth_split_dataset(split_file: str | Path, *, image_root: str | Path, depth_root: str | Path,
                        depth_scale: float, pipeline: DepthPipeline, training: bool = False, seed: int = 0,
                        max_depth: Optional[float] = None) -> ImageDepthDataset:
    """KITTI Eigen (``depth_scale=256``) or NYU-Depth v2 (``depth_scale=1000``) split-file dataset."""
    items = split_file_items(split_file, image_root=image_root, depth_root=depth_root)
    return ImageDepthDataset(items=items, depth_scale=depth_scale, pipeline=pipeline, training=training,
                             seed=seed, max_depth=max_depth)


def synthetic_depth_dataset(root: str | Path, split: str, *, pipeline: DepthPipeline, training: bool = False,
                            seed: int = 0, max_depth: Optional[float] = None) -> ImageDepthDataset:
    meta = read_export_meta(root)
    scale = float(meta.get("depth_scale", 1000.0))
    items = [DepthItem(img, dep, name) for img, dep, name in export_items(root, split, "depth")]
    return ImageDepthDataset(items=items, depth_scale=scale, pipeline=pipeline, training=training, seed=seed,
                             max_depth=max_depth)

