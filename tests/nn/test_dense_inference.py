"""Whole-image and sliding-window inference helpers."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.errors import InputError
from bev_ddp.nn.dense_inference import SlidingWindow, infer_sliding, infer_whole


def test_window_boxes_cover_the_image_and_align_to_borders():
    boxes = SlidingWindow(crop=(4, 6), stride=(3, 4)).boxes(10, 13)
    cover = torch.zeros(10, 13, dtype=torch.int64)
    for top, left, bottom, right in boxes:
        assert (bottom - top, right - left) == (4, 6)
        cover[top:bottom, left:right] += 1
    assert (cover > 0).all()
    assert max(b[2] for b in boxes) == 10 and max(b[3] for b in boxes) == 13
    # rows: ceil((10 - 4) / 3) + 1 = 3 windows; cols: ceil((13 - 6) / 4) + 1 = 3
    assert len(boxes) == 9
    with pytest.raises(InputError, match="gaps"):
        SlidingWindow(crop=(4, 4), stride=(5, 4))


def _position_fn(x: torch.Tensor):
    """A 'model' whose output at a pixel depends only on the input pixel (translation equivariant)."""
    return {1: [x[:, :1] * 2.0 + 1.0, x[:, 1:2].abs()]}


def test_sliding_equals_whole_for_a_pointwise_model():
    x = torch.randn(2, 3, 11, 17)
    whole = infer_whole(x, _position_fn, size_divisor=8)
    slide = infer_sliding(x, _position_fn, window=SlidingWindow(crop=(8, 8), stride=(5, 6)))
    for a, b in zip(whole[1], slide[1]):
        assert a.shape[-2:] == (11, 17)
        assert torch.allclose(a, b, atol=1e-6)


def test_whole_pads_to_divisor_and_crops_back():
    seen = []

    def fn(x):
        seen.append(tuple(x.shape[-2:]))
        return {1: [x[:, :1]]}

    out = infer_whole(torch.randn(1, 3, 11, 17), fn, size_divisor=8)
    assert seen == [(16, 24)] and out[1][0].shape == (1, 1, 11, 17)


def test_sliding_pads_small_images_and_averages_overlaps():
    calls = []

    def fn(x):
        calls.append(tuple(x.shape[-2:]))
        return {1: [torch.full_like(x[:, :1], float(len(calls)))]}

    out = infer_sliding(torch.randn(1, 3, 6, 10), fn, window=SlidingWindow(crop=(8, 8), stride=(8, 2)))
    assert set(calls) == {(8, 8)} and len(calls) == 2  # image padded to 8x10: windows at left 0 and 2
    m = out[1][0][0, 0]
    assert m.shape == (6, 10)
    assert (m[:, :2] == 1).all() and (m[:, 8:] == 2).all() and (m[:, 2:8] == 1.5).all()
