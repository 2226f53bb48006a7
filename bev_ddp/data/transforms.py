"""Image and BEV augmentations as explicit matrices, sampled from a ``torch.Generator``.

Image augmentation (per camera): resize, crop, horizontal flip, rotation about the crop centre,
as one 2-D affine map from original pixels (u, v) to augmented pixels — pixel edges at integer
coordinates, so pixel (i, j) has its centre at (j + 0.5, i + 0.5).  The [4, 4] ``img_aug`` acts on
``(u, v, d, 1)`` after the perspective division (depth ``d`` unchanged), as in BEVFusion.

BEV augmentation: rotation about z, uniform scale, translation, then flips, as one [4, 4] map from
the lidar frame to the augmented lidar frame, applied to points; labels are rasterised in the
augmented frame (:func:`bev_ddp.data.bev_map.rasterize_map`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageAugConfig:
    """Ranges of the image augmentation (training); evaluation uses the middle of each range.

    Attributes:
        resize_range: multiplier of the base scale (final width / source width).
        bottom_crop_range: fraction of the resized height cut from the bottom before the crop
            of the final height is taken from what is left (the top goes first).
        rotate_deg: rotation range, degrees.  flip: probability of a horizontal flip.
        eval_resize: multiplier at evaluation (default: the middle of ``resize_range``;
            BEVFusion evaluates at 0.48 of the source width, 0.48 / 0.44 at 704 of 1600 px).
    """

    resize_range: tuple[float, float] = (0.9, 1.1)
    bottom_crop_range: tuple[float, float] = (0.0, 0.0)
    rotate_deg: tuple[float, float] = (-5.4, 5.4)
    flip: float = 0.5
    eval_resize: Optional[float] = None


@dataclass(frozen=True)
class BEVAugConfig:
    """Ranges of the BEV augmentation (training only).

    Attributes:
        rotate_deg: rotation about z, degrees.  scale_range: uniform scale.
        translation_std: std of the x, y, z translation, m.
        flip_x, flip_y: probability of negating x (flip front/back), y (flip left/right).
    """

    rotate_deg: tuple[float, float] = (-22.5, 22.5)
    scale_range: tuple[float, float] = (0.9, 1.1)
    translation_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    flip_x: float = 0.5
    flip_y: float = 0.5


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen, dtype=torch.float64))


def image_aug_matrix(
    src_size: tuple[int, int],
    out_size: tuple[int, int],
    config: ImageAugConfig,
    gen: torch.Generator | None,
) -> np.ndarray:
    """[3, 3] affine map, original pixel (u, v, 1) → augmented pixel; random when ``gen`` is given.

    Args:
        src_size, out_size: (H, W) of the source and augmented images.
    """
    (h, w), (fh, fw) = src_size, out_size
    base = fw / w
    if gen is None:
        mid = float(np.mean(config.resize_range)) if config.eval_resize is None else float(config.eval_resize)
        resize = base * mid
        bottom = float(np.mean(config.bottom_crop_range))
    else:
        resize = base * _uniform(gen, *config.resize_range)
        bottom = _uniform(gen, *config.bottom_crop_range)
    new_h, new_w = h * resize, w * resize
    crop_top = (1.0 - bottom) * new_h - fh
    crop_left = (new_w - fw) / 2.0 if gen is None else _uniform(gen, 0.0, max(0.0, new_w - fw))
    flip = gen is not None and _uniform(gen, 0.0, 1.0) < config.flip
    angle = float(np.mean(config.rotate_deg)) if gen is None else _uniform(gen, *config.rotate_deg)

    m = np.diag([resize, resize, 1.0])  # resize
    m = np.array([[1.0, 0.0, -crop_left], [0.0, 1.0, -crop_top], [0.0, 0.0, 1.0]]) @ m  # crop
    if flip:
        m = np.array([[-1.0, 0.0, fw], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    theta = math.radians(angle)
    c, s = math.cos(theta), math.sin(theta)
    centre = np.array([fw / 2.0, fh / 2.0])
    rot = np.eye(3)
    rot[:2, :2] = [[c, -s], [s, c]]
    rot[:2, 2] = centre - rot[:2, :2] @ centre
    return rot @ m


def to_img_aug4(m: np.ndarray) -> np.ndarray:
    """[4, 4] form of a [3, 3] pixel affine map acting on (u, v, d, 1)."""
    out = np.eye(4)
    out[:2, :2] = m[:2, :2]
    out[:2, 3] = m[:2, 2]
    return out


def warp_image(image: torch.Tensor, m: np.ndarray, out_size: tuple[int, int]) -> torch.Tensor:
    """Resample ``image`` [C, H, W] through the pixel map ``m`` (original → augmented) to ``out_size``.

    Bilinear, zeros outside the source; exact in the pixel-edge convention (``align_corners=False``).
    """
    c, h, w = image.shape
    fh, fw = out_size
    inv = torch.as_tensor(np.linalg.inv(m), dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(fh, dtype=torch.float64) + 0.5, torch.arange(fw, dtype=torch.float64) + 0.5,
                          indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1) @ inv.T  # [fh, fw, 3] source pixels
    grid = torch.stack([pix[..., 0] / w * 2 - 1, pix[..., 1] / h * 2 - 1], dim=-1)  # [fh, fw, 2] in [-1, 1]
    out = F.grid_sample(image[None].float(), grid[None].float(), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[0]  # [C, fh, fw]


def bev_aug_matrix(config: BEVAugConfig, gen: torch.Generator | None) -> np.ndarray:
    """[4, 4] lidar → augmented lidar: flip · translate · scale · rotate; identity without ``gen``."""
    if gen is None:
        return np.eye(4)
    theta = math.radians(_uniform(gen, *config.rotate_deg))
    scale = _uniform(gen, *config.scale_range)
    shift = torch.randn(3, generator=gen, dtype=torch.float64).numpy() * np.asarray(config.translation_std)
    flip_x = _uniform(gen, 0.0, 1.0) < config.flip_x
    flip_y = _uniform(gen, 0.0, 1.0) < config.flip_y
    c, s = math.cos(theta), math.sin(theta)
    out = np.eye(4)
    out[:3, :3] = scale * np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    out[:3, 3] = shift
    flip = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0, 1.0])
    return flip @ out
