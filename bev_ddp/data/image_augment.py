"""Photometric and geometric augmentations of the DDP authors' seg and depth recipes.

Every function draws from the ``torch.Generator`` it is given (the dataset's per-item generator), so
a sample is the same for the same seed, item and epoch.  Images are uint8 [3, H, W] RGB in and out.

* :func:`photometric_distortion` — mmseg's ``PhotoMetricDistortion`` for segmentation: brightness
  ±32 (additive), contrast ×[0.5, 1.5] before or after (random order), saturation ×[0.5, 1.5],
  hue ±18 OpenCV units (±36°), each applied with probability 0.5.  Saturation and hue go through
  torchvision's ``adjust_saturation`` (a blend with the grey image) and ``adjust_hue`` (HSV shift)
  instead of mmcv's HSV arithmetic: same ranges, not bit-identical.
* :func:`color_aug` — the depth recipes' ``ColorAug`` (probability 0.5): gamma, brightness and a
  per-channel colour factor, each uniform in [0.9, 1.1].
* :func:`random_rotate` — the depth recipes' ``RandomRotate`` (probability 0.5, ±2.5°): bilinear for
  the image, nearest for sparse depth (no blending of valid and missing pixels; corners become 0).
* :func:`valid_region_crop` — NYU's ``NYUCrop``: rows 45..471, cols 43..607 of the 480×640 frame,
  the region the Kinect depth is defined in.
"""
from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

NYU_VALID_REGION = (45, 472, 43, 608)  # top, bottom, left, right (end exclusive) of a 480x640 NYU frame


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=gen))


def _chance(gen: torch.Generator, prob: float) -> bool:
    return bool(torch.rand(1, generator=gen) < prob)


def photometric_distortion(img: torch.Tensor, gen: torch.Generator, *, brightness_delta: float = 32.0,
                           contrast_range: tuple[float, float] = (0.5, 1.5),
                           saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18.0) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, H, W]; ``hue_delta`` in OpenCV hue units (180 = full circle)."""
    x = img.float()  # [3, H, W] in 0..255

    def contrast(t: torch.Tensor) -> torch.Tensor:
        return (t * _uniform(gen, *contrast_range)).clamp(0, 255) if _chance(gen, 0.5) else t

    if _chance(gen, 0.5):
        x = (x + _uniform(gen, -brightness_delta, brightness_delta)).clamp(0, 255)
    contrast_first = _chance(gen, 0.5)
    if contrast_first:
        x = contrast(x)
    if _chance(gen, 0.5):
        x = TF.adjust_saturation(x / 255.0, _uniform(gen, *saturation_range)).clamp(0, 1) * 255.0
    if _chance(gen, 0.5):
        x = TF.adjust_hue(x / 255.0, _uniform(gen, -hue_delta, hue_delta) / 180.0).clamp(0, 1) * 255.0
    if not contrast_first:
        x = contrast(x)
    return x.round().clamp(0, 255).to(torch.uint8)


def color_aug(img: torch.Tensor, gen: torch.Generator, *, prob: float = 0.5,
              gamma_range: tuple[float, float] = (0.9, 1.1), brightness_range: tuple[float, float] = (0.9, 1.1),
              color_range: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, H, W]: ``(x / 255) ** gamma * brightness * colour[c]``, clipped."""
    if not _chance(gen, prob):
        return img
    gamma, brightness = _uniform(gen, *gamma_range), _uniform(gen, *brightness_range)
    colour = torch.tensor([_uniform(gen, *color_range) for _ in range(3)]).view(3, 1, 1)
    x = (img.float() / 255.0) ** gamma * brightness * colour
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def random_rotate(img: torch.Tensor, depth: torch.Tensor, gen: torch.Generator, *, prob: float = 0.5,
                  degree: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate image [3, H, W] (bilinear) and depth [H, W] (nearest) by one angle ~ U(-degree, degree)."""
    if not _chance(gen, prob):
        return img, depth
    angle = _uniform(gen, -degree, degree)
    img = TF.rotate(img, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    depth = TF.rotate(depth[None], angle, interpolation=InterpolationMode.NEAREST, fill=0.0)[0]
    return img, depth


def valid_region_crop(img: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NYU's valid region (``NYU_VALID_REGION``) of a 480x640 frame; other sizes pass unchanged."""
    if tuple(depth.shape[-2:]) != (480, 640):
        return img, depth
    top, bottom, left, right = NYU_VALID_REGION
    return img[:, top:bottom, left:right], depth[top:bottom, left:right]
