"""Whole-image and sliding-window dense inference, shared by segmentation and depth.

A *dense function* maps images [B, 3, h, w] to ``{steps: [map, ...]}`` with every map
[B, C, h, w] at the input resolution (probabilities, depth, uncertainty ...).  Whole-image
inference pads the image at the bottom/right to a multiple of the backbone stride and crops the
maps back.  Sliding-window inference tiles the (padded) image with ``crop``-sized windows every
``stride`` pixels — the last window in each direction is aligned to the image border — and
averages the maps where windows overlap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

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
