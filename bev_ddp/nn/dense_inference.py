"""Whole-image and sliding-window dense inference, shared by segmentation and depth.

A *dense function* maps images [B, 3, h, w] to ``{steps: [map, ...]}`` with every map
[B, C, h, w] at the input resolution (probabilities, depth, uncertainty ...).  Whole-image
inference pads the image at the bottom/right to a multiple of the backbone stride and crops the
maps back.  Sliding-window inference tiles the (padded) image with ``crop``-sized windows every
``stride`` pixels — the last window in each direction is aligned to the image border — and
averages the maps where windows overlap.  :func:`dense_predictions` is the whole inference
contract of an image task: check the batch, run whole-image or sliding-window inference (optionally
under multi-scale + flip test-time augmentation, :class:`MultiScaleFlip`), resize to the ground
truth's size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from bev_ddp.diffusion.sampler import check_step_counts
from bev_ddp.errors import InputError

DenseMaps = dict[int, list[torch.Tensor]]
DenseFn = Callable[[torch.Tensor], DenseMaps]


@dataclass(frozen=True)
class SlidingWindow:
    """Window size and stride in input pixels, (height, width) each."""

    crop: tuple[int, int]
    stride: tuple[int, int]

    def __post_init__(self) -> None:
        if min(*self.crop, *self.stride) < 1:
            raise InputError(f"sliding window crop {self.crop} and stride {self.stride} must be positive")
        if self.stride[0] > self.crop[0] or self.stride[1] > self.crop[1]:
            raise InputError(f"sliding window stride {self.stride} larger than crop {self.crop} leaves gaps")

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(top, left, bottom, right) of every window over an image of at least ``crop`` size."""
        (ch, cw), (sh, sw) = self.crop, self.stride
        rows = max(height - ch + sh - 1, 0) // sh + 1
        cols = max(width - cw + sw - 1, 0) // sw + 1
        out = []
        for r in range(rows):
            for c in range(cols):
                bottom, right = min(r * sh + ch, height), min(c * sw + cw, width)
                out.append((max(bottom - ch, 0), max(right - cw, 0), bottom, right))
        return out


@dataclass(frozen=True)
class MultiScaleFlip:
    """Test-time augmentation: the input rescaled by each of ``scales`` (and mirrored when ``flip``).

    As mmseg's aug test: each view is rescaled to ``int(size * scale + 0.5)`` (bilinear), inferred
    (whole image or sliding windows), its maps resized back to the input size (values bilinear,
    uncertainty nearest) and un-mirrored, and the maps of all views averaged.  The DDP authors'
    multi-scale figure uses scales 0.5, 0.75, 1.0, 1.25, 1.5, 1.75 with flip.
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise InputError(f"test-time augmentation scales must be positive, got {list(self.scales)}")

    def views(self) -> list[tuple[float, bool]]:
        return [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]


def infer_augmented(images: torch.Tensor, fn: DenseFn, *, tta: MultiScaleFlip, window: SlidingWindow | None,
                    size_divisor: int) -> DenseMaps:
    """:func:`infer_dense` averaged over the views of ``tta``; maps [B, C, h, w] at the input size.

    The last map of each step's list is taken as the uncertainty (resized by nearest neighbour).
    """
    h, w = images.shape[-2:]
    sums: DenseMaps = {}
    views = tta.views()
    for scale, flip in views:
        size = (int(h * scale + 0.5), int(w * scale + 0.5))
        x = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        x = x.flip(-1) if flip else x
        for s, maps in infer_dense(x, fn, window=window, size_divisor=size_divisor).items():
            back = []
            for i, m in enumerate(maps):
                if tuple(m.shape[-2:]) != (h, w):
                    nearest = i == len(maps) - 1
                    m = F.interpolate(m, size=(h, w), mode="nearest" if nearest else "bilinear",
                                      **({} if nearest else {"align_corners": False}))
                back.append(m.flip(-1) if flip else m)
            sums[s] = back if s not in sums else [a + b for a, b in zip(sums[s], back)]
    return {s: [m / len(views) for m in maps] for s, maps in sums.items()}


def pad_to(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad [B, C, h, w] at the bottom/right to (height, width) (no-op when already there)."""
    pad_h, pad_w = height - images.shape[-2], width - images.shape[-1]
    if pad_h <= 0 and pad_w <= 0:
        return images
    return F.pad(images, (0, max(pad_w, 0), 0, max(pad_h, 0)))


def _ceil_to(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def infer_whole(images: torch.Tensor, fn: DenseFn, *, size_divisor: int) -> DenseMaps:
    """Run ``fn`` on the image padded to a multiple of ``size_divisor``; maps cropped back."""
    h, w = images.shape[-2:]
    padded = pad_to(images, _ceil_to(h, size_divisor), _ceil_to(w, size_divisor))
    return {s: [m[..., :h, :w] for m in maps] for s, maps in fn(padded).items()}


def infer_sliding(images: torch.Tensor, fn: DenseFn, *, window: SlidingWindow) -> DenseMaps:
    """Run ``fn`` per window and average overlapping maps; output maps are [B, C, h, w]."""
    h, w = images.shape[-2:]
    ph, pw = max(h, window.crop[0]), max(w, window.crop[1])
    padded = pad_to(images, ph, pw)
    sums: DenseMaps = {}
    count = torch.zeros(1, 1, ph, pw, device=images.device)
    for top, left, bottom, right in window.boxes(ph, pw):
        maps = fn(padded[..., top:bottom, left:right])
        for s, tiles in maps.items():
            if s not in sums:
                sums[s] = [torch.zeros(*t.shape[:2], ph, pw, device=t.device, dtype=t.dtype) for t in tiles]
            for acc, tile in zip(sums[s], tiles):
                acc[..., top:bottom, left:right] += tile
        count[..., top:bottom, left:right] += 1
    return {s: [(acc / count)[..., :h, :w] for acc in maps] for s, maps in sums.items()}


def infer_dense(images: torch.Tensor, fn: DenseFn, *, window: SlidingWindow | None, size_divisor: int) -> DenseMaps:
    """Sliding-window inference when ``window`` is set, else whole-image inference."""
    if window is None:
        return infer_whole(images, fn, size_divisor=size_divisor)
    return infer_sliding(images, fn, window=window)


def check_images(batch: dict[str, Any]) -> torch.Tensor:
    images = batch.get("img")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"batch['img'] must be a float tensor [B, 3, H, W], got {got}")
    return images


def output_size(batch: dict[str, Any], images: torch.Tensor) -> tuple[int, int]:
    """The size predictions are returned at: ``batch['ori_size']`` (one size per batch) or the input's."""
    sizes = batch.get("ori_size")
    if sizes is None:
        return int(images.shape[-2]), int(images.shape[-1])
    sizes = torch.as_tensor(sizes).reshape(-1, 2)
    if not bool((sizes == sizes[0]).all()):
        raise InputError(f"batch holds ground truth of different sizes {sizes.tolist()}; evaluate with batch_size 1")
    return int(sizes[0, 0]), int(sizes[0, 1])


def dense_predictions(batch: dict[str, Any], steps: int | Sequence[int], dense: Callable[[torch.Tensor, list[int]], Any],
                      *, window: Optional[SlidingWindow], size_divisor: int,
                      tta: Optional[MultiScaleFlip] = None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Whole-image or sliding-window inference of ``batch['img']`` at :func:`output_size`.

    ``tta``: average over rescaled / mirrored views (:func:`infer_augmented`); None = the input only.

    ``dense(images, steps)`` returns ``{steps: [values [B, K, h, w], uncertainty [B, 1, h, w]]}``;
    values are resized bilinearly and the uncertainty by nearest neighbour.  Returns
    ``{steps: (values [B, K, H, W], uncertainty [B, H, W])}``.
    """
    images = check_images(batch)
    steps = sorted(check_step_counts(steps))
    size = output_size(batch, images)
    if tta is None:
        maps = infer_dense(images, lambda x: dense(x, steps), window=window, size_divisor=size_divisor)
    else:
        maps = infer_augmented(images, lambda x: dense(x, steps), tta=tta, window=window, size_divisor=size_divisor)
    result = {}
    for s, (values, uncertainty) in maps.items():
        if tuple(values.shape[-2:]) != size:
            values = F.interpolate(values, size=size, mode="bilinear", align_corners=False)
            uncertainty = F.interpolate(uncertainty, size=size, mode="nearest")
        result[s] = (values, uncertainty[:, 0])
    return result
