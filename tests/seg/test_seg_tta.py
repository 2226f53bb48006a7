"""Multi-scale + flip test-time augmentation of segmentation (mmseg's aug test, the 47.8 / 83.15 figures)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bev_ddp.errors import ConfigError, InputError
from bev_ddp.nn.dense_inference import MultiScaleFlip, dense_predictions
from bev_ddp.seg.task import TASK as SEG
from seg_helpers import image_batch, tiny_cfg


def ramp_fn(x: torch.Tensor, steps: list[int]):
    """Ignores the image: values = column index (left to right), uncertainty = channel-0 of the image."""
    b, _, h, w = x.shape
    cols = torch.arange(w, dtype=x.dtype).expand(b, 1, h, w)
    return {s: [cols.clone(), x[:, :1]] for s in steps}


def identity_fn(x: torch.Tensor, steps: list[int]):
    return {s: [x.clone(), x[:, :1].clone()] for s in steps}


def run(fn, images, tta):
    return dense_predictions({"img": images}, [1], fn, window=None, size_divisor=1, tta=tta)[1]


def test_flip_is_applied_to_the_input_and_undone_on_the_maps():
    images = image_batch(1, 8, 12)
    values, _ = run(identity_fn, images, MultiScaleFlip(scales=(1.0,), flip=True))
    assert torch.allclose(values, images)  # mirrored view, mirrored back: same image; not undone = blur
    ramp, _ = run(ramp_fn, images, MultiScaleFlip(scales=(1.0,), flip=True))
    # view 1 says column j, the mirrored view says w-1-j at the same (un-mirrored) pixel: mean (w-1)/2
    assert torch.allclose(ramp, torch.full_like(ramp, 5.5))


def test_scales_are_rescaled_views_averaged_at_the_input_size():
    images = image_batch(1, 8, 12)
    values, _ = run(identity_fn, images, MultiScaleFlip(scales=(0.5, 1.0)))
    half = F.interpolate(images, size=(4, 6), mode="bilinear", align_corners=False)
    back = F.interpolate(half, size=(8, 12), mode="bilinear", align_corners=False)
    assert torch.allclose(values, (back + images) / 2, atol=1e-6)
    sizes = []
    run(lambda x, s: sizes.append(tuple(x.shape[-2:])) or identity_fn(x, s), images,
        MultiScaleFlip(scales=(0.5, 0.75, 1.75)))
    assert sizes == [(4, 6), (6, 9), (14, 21)]  # int(size * scale + 0.5)
    with pytest.raises(InputError, match="positive"):
        MultiScaleFlip(scales=(0.0,))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SEG.build_model(tiny_cfg(SEG, "synth_tiny.yaml")).eval()


def test_one_scale_no_flip_equals_plain_inference_on_a_tiny_model(tiny_model):
    batch = {"img": image_batch(1, 32, 48)}
    plain = tiny_model.predict(batch, steps=[2], seed=3)
    tiny_model.tta = MultiScaleFlip(scales=(1.0,), flip=False)
    try:
        same = tiny_model.predict(batch, steps=[2], seed=3)
        tiny_model.tta = MultiScaleFlip(scales=(0.5,), flip=True)
        aug = tiny_model.predict(batch, steps=[2], seed=3)
    finally:
        tiny_model.tta = None
    assert torch.equal(plain[2].labels, same[2].labels) and torch.equal(plain[2].confidence, same[2].confidence)
    assert aug[2].labels.shape == plain[2].labels.shape
    assert not torch.equal(aug[2].confidence, plain[2].confidence)  # the views do change the average


def test_tta_from_config():
    cfg = tiny_cfg(SEG, "reference/ade20k_swin_t_ms.yaml")
    assert list(cfg.model.tta_scales) == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and cfg.model.tta_flip
    from bev_ddp.seg.build import tta_from_config
    assert tta_from_config(cfg.model) == MultiScaleFlip(scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True)
    assert tta_from_config(tiny_cfg(SEG, "synth_tiny.yaml").model) is None
    with pytest.raises(ConfigError, match="tta_scales"):
        tta_from_config(tiny_cfg(SEG, "synth_tiny.yaml", "model.tta_scales=[-1.0]").model)
