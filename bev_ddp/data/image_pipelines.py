"""Augmentation pipelines of the image segmentation and depth datasets.

:class:`SegPipeline` (keep-ratio rescale, random crop with ignore padding, horizontal flip) and
:class:`DepthPipeline` (KITTI benchmark crop, optional resize, random crop, flip; depth is never
rescaled).  Images come in as uint8 [3, H, W] and leave ImageNet-normalised float32; labels are
int64 [H, W] (255 = ignore), depth float32 [1, H, W] in metres (0 = invalid).  Randomness comes
from the ``torch.Generator`` the dataset passes in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from bev_ddp.data.image_augment import color_aug, photometric_distortion, random_rotate, valid_region_crop
from bev_ddp.nn.backbone import IMAGENET_NORMALISATION, ImageNormalisation

IGNORE_INDEX = 255


def normalise_image(img: torch.Tensor, normalisation: ImageNormalisation = IMAGENET_NORMALISATION) -> torch.Tensor:
    """uint8 [3, H, W] -> float32 [3, H, W] normalised with the backbone's mean / std (ImageNet's)."""
    return normalisation.apply(img.float() / 255.0)


def _resize_image(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, h, w] (bilinear, antialiased)."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    out = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def _resize_nearest(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[H, W] labels or sparse depth -> [h, w] by nearest neighbour (never blends values)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(t.dtype)


def _random_crop(gen: torch.Generator, size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    h, w = size
    top = int(torch.randint(0, max(h - crop[0], 0) + 1, (1,), generator=gen))
    left = int(torch.randint(0, max(w - crop[1], 0) + 1, (1,), generator=gen))
    return top, left


def _crop_pad(t: torch.Tensor, top: int, left: int, crop: tuple[int, int], fill: float) -> torch.Tensor:
    """Crop [..., H, W] at (top, left) to ``crop``; pad bottom/right with ``fill`` when smaller."""
    out = t[..., top:top + crop[0], left:left + crop[1]]
    pad_h, pad_w = crop[0] - out.shape[-2], crop[1] - out.shape[-1]
    if pad_h > 0 or pad_w > 0:
        out = F.pad(out.float() if out.dtype == torch.uint8 else out, (0, pad_w, 0, pad_h), value=fill).to(t.dtype)
    return out


def rescale_size(size: tuple[int, int], scale: Sequence[int], ratio: float = 1.0) -> tuple[int, int]:
    """Keep-ratio size fitting ``scale = (long, short)`` bounds (the usual segmentation rescale)."""
    h, w = size
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w)) * ratio
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


@dataclass
class SegPipeline:
    """Segmentation augmentation.

    Training: keep-ratio rescale into ``scale`` times a ratio ~ U(``ratio_range``), random crop
    ``crop_size`` (padded with 0 / ignore), horizontal flip with ``flip_prob``.  Evaluation:
    keep-ratio rescale into ``scale`` only; the ground truth stays at its original size (``ori_size``)
    and predictions are resized back to it.  ``scale=None`` keeps the image size.
    ``cat_max_ratio`` < 1: redraw the crop (up to 10 times, as mmseg) while one class covers at least
    that fraction of its labelled pixels or it holds a single class.  ``photometric``: mmseg's
    PhotoMetricDistortion after the flip (:func:`~bev_ddp.data.image_augment.photometric_distortion`).
    """

    scale: Optional[tuple[int, int]] = None
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: Optional[tuple[int, int]] = None
    flip_prob: float = 0.5
    cat_max_ratio: float = 1.0
    photometric: bool = False

    def _crop_origin(self, label: torch.Tensor, crop: tuple[int, int], gen: torch.Generator) -> tuple[int, int]:
        top, left = _random_crop(gen, tuple(label.shape), crop)
        if self.cat_max_ratio >= 1.0:
            return top, left
        for _ in range(10):
            window = label[top:top + crop[0], left:left + crop[1]]
            counts = torch.unique(window[window != IGNORE_INDEX], return_counts=True)[1]
            if len(counts) > 1 and float(counts.max()) / float(counts.sum()) < self.cat_max_ratio:
                break
            top, left = _random_crop(gen, tuple(label.shape), crop)
        return top, left

    def __call__(self, img: torch.Tensor, label: torch.Tensor, *, training: bool,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        size = tuple(img.shape[-2:])
        if not training:
            new = rescale_size(size, self.scale) if self.scale else size
            return _resize_image(img, new), label, {"flip": False}
        ratio = float(torch.empty(1).uniform_(*self.ratio_range, generator=gen)) if self.ratio_range else 1.0
        new = rescale_size(size, self.scale, ratio) if self.scale else size
        img, label = _resize_image(img, new), _resize_nearest(label, new)
        if self.crop_size:
            crop = tuple(self.crop_size)
            top, left = self._crop_origin(label, crop, gen)
            img, label = _crop_pad(img, top, left, crop, 0), _crop_pad(label, top, left, crop, IGNORE_INDEX)
        flip = bool(torch.rand(1, generator=gen) < self.flip_prob)
        if flip:
            img, label = img.flip(-1), label.flip(-1)
        if self.photometric:
            img = photometric_distortion(img, gen)
        return img, label, {"flip": flip}


@dataclass
class DepthPipeline:
    """Depth augmentation; never rescales, since a resize would change the metric depth relation.

    ``kb_crop``: the KITTI benchmark crop (bottom 352 rows, centred 1216 columns) at train and
    test time.  ``resize``: optional fixed (H, W) applied to image (bilinear) and depth (nearest) —
    used for synthetic renders only.  Training: ``valid_region`` crop (NYU), rotation by up to
    ``rotate_degree`` (probability 0.5; 0 = off), random crop ``crop_size``, horizontal flip, colour
    augmentation with brightness in ``color_brightness`` (None = off); the DDP authors' order
    (:mod:`bev_ddp.data.image_augment`).  Tests see the full frame (the evaluation crop applies there).
    """

    kb_crop: bool = False
    resize: Optional[tuple[int, int]] = None
    crop_size: Optional[tuple[int, int]] = None
    flip_prob: float = 0.5
    valid_region: bool = False
    rotate_degree: float = 0.0
    color_brightness: Optional[tuple[float, float]] = None

    def __call__(self, img: torch.Tensor, depth: torch.Tensor, *, training: bool,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        flags: dict[str, Any] = {}
        if self.kb_crop:
            h, w = depth.shape
            top, left = max(h - 352, 0), max((w - 1216) // 2, 0)
            img, depth = img[:, top:top + 352, left:left + 1216], depth[top:top + 352, left:left + 1216]
            # where the crop sits in the full frame: evaluation crops are defined on the full frame
            flags = {"full_size": (h, w), "crop_offset": (top, left)}
        if self.valid_region and training:
            img, depth = valid_region_crop(img, depth)
        if self.resize:
            size = tuple(self.resize)
            img, depth = _resize_image(img, size), _resize_nearest(depth, size)
        if not training:
            return img, depth, {"flip": False, **flags}
        if self.rotate_degree > 0:
            img, depth = random_rotate(img, depth, gen, degree=self.rotate_degree)
        if self.crop_size:
            crop = tuple(self.crop_size)
            top, left = _random_crop(gen, tuple(depth.shape), crop)
            img, depth = _crop_pad(img, top, left, crop, 0), _crop_pad(depth, top, left, crop, 0.0)
        flip = bool(torch.rand(1, generator=gen) < self.flip_prob)  # crop-then-flip: same distribution as flip-then-crop
        if flip:
            img, depth = img.flip(-1), depth.flip(-1)
        if self.color_brightness is not None:
            img = color_aug(img, gen, brightness_range=tuple(self.color_brightness))
        return img, depth, {"flip": flip}


# ------------------------------------------------------------------------------------- datasets
