"""Ground-truth downsampling of the depth encoding: masked (ours) vs bilinear with zeros (the authors')."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.depth.encoding import ReLUDepthEncoder
from bev_ddp.errors import InputError


def encoders():
    kw = dict(min_value=1.0, max_value=9.0, scale=0.1)
    return ReLUDepthEncoder(**kw), ReLUDepthEncoder(**kw, target_downsample="bilinear")


def test_bilinear_blends_missing_zeros_masked_ignores_them():
    masked, bilinear = encoders()
    depth = torch.zeros(1, 1, 4, 4)
    depth[..., :2, :2] = 5.0  # the top-left cell: all 4 pixels valid
    depth[..., 0, 2] = 9.0  # the top-right cell: 1 of 4 pixels valid
    m = masked.encode(depth, (2, 2))[0, 0]
    b = bilinear.encode(depth, (2, 2))[0, 0]
    # masked: mean of the valid pixels (5 m -> 0, 9 m -> 0.1), empty cells 0
    assert torch.allclose(m, torch.tensor([[0.0, 0.1], [0.0, 0.0]]))
    # bilinear (align_corners False, exact 2x: the 2x2 mean): top-right 2.25 m, empty cells 0 m -> range minimum
    def enc(d: float) -> float:
        return max(min((d - 1.0) / 8.0 * 2 - 1, 1.0), -1.0) * 0.1
    expected = torch.tensor([[enc(5.0), enc(2.25)], [enc(0.0), enc(0.0)]])
    assert torch.allclose(b, expected, atol=1e-6)
    assert bilinear.prepare_target(depth, (2, 2))[1].all()  # every cell counts
    assert torch.equal(bilinear.encode(depth), masked.encode(depth))  # no resize: the same


def test_unknown_downsample_is_refused():
    with pytest.raises(InputError, match="target_downsample"):
        ReLUDepthEncoder(min_value=1.0, max_value=9.0, target_downsample="area")
