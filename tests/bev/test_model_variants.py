"""Camera-only, LiDAR-only and fusion models with both heads: training forward, backward, predict."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.bev.build import build_bev_model
from bev_ddp.bev.heads import BEVSegmentationHead, DDPBEVHead
from bev_ddp.bev.model import BEVFusionModel, DegradedInputWarning
from bev_ddp.errors import ConfigError, InputError

from bev_test_helpers import load_bev_config, random_sample  # noqa: I001
from bev_ddp.data.structures import collate_samples

pytestmark = pytest.mark.filterwarnings("ignore::bev_ddp.ops.ExtensionFallbackWarning")

TINY = dict(image_size=(96, 176), num_points=3000, grid=(64, 64), extent=32.0)


def tiny_batch(batch_size: int = 2, model: BEVFusionModel | None = None, **kwargs) -> dict:
    """Random samples at the tiny grid; images at ``model``'s input size when it has a camera."""
    if model is not None and model.camera is not None:
        kwargs.setdefault("image_size", model.camera.view_transform.image_size)
    return collate_samples([random_sample(seed=i, **{**TINY, **kwargs}) for i in range(batch_size)])


def build(name: str, *overrides: str) -> BEVFusionModel:
    torch.manual_seed(0)
    return build_bev_model(load_bev_config(name, *overrides))


@pytest.mark.parametrize(
    "config, modalities, head_type",
    [
        ("synth_tiny_fusion_ddp.yaml", ("camera", "lidar"), DDPBEVHead),
        ("synth_tiny_camera_ddp.yaml", ("camera",), DDPBEVHead),
        ("synth_tiny_lidar_ddp.yaml", ("lidar",), DDPBEVHead),
        ("synth_tiny_fusion_baseline.yaml", ("camera", "lidar"), BEVSegmentationHead),
    ],
)
def test_variant_trains_and_predicts(config, modalities, head_type):
    model = build(config)
    assert model.modalities == modalities and isinstance(model.head, head_type)
    batch = tiny_batch(model=model)
    _, losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    # every encoder that is present receives a gradient
    for name in modalities:
        encoder = getattr(model, name)
        grads = [p.grad for p in encoder.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} encoder got no gradient"
    model.eval()
    preds = model.predict(batch, steps=[1, 2], seed=0)
    assert sorted(preds) == [1, 2]
    for steps, pred in preds.items():
        assert pred.probs.shape == (2, 6, 64, 64)
        assert pred.uncertainty.shape == (2, 64, 64)
        assert bool(((pred.probs >= 0) & (pred.probs <= 1)).all())
    if head_type is DDPBEVHead:
        assert len(preds[2].step_probs) == 2
        torch.testing.assert_close(preds[2].step_probs[-1], preds[2].probs)
    else:  # the baseline ignores the step count and is certain
        torch.testing.assert_close(preds[1].probs, preds[2].probs)
        assert torch.count_nonzero(preds[2].uncertainty) == 0


def test_predict_is_seeded_and_training_is_reproducible():
    batch = tiny_batch()
    losses = []
    for _ in range(2):
        model = build("synth_tiny_fusion_ddp.yaml")
        torch.manual_seed(1)
        _, loss = model(batch)
        losses.append(loss["loss_ddp"].detach())
    assert torch.equal(losses[0], losses[1])
    model.eval()
    a = model.predict(batch, steps=[2], seed=0)[2]
    b = model.predict(batch, steps=[2], seed=0)[2]
    c = model.predict(batch, steps=[2], seed=1)[2]
    assert torch.equal(a.probs, b.probs) and torch.equal(a.uncertainty, b.uncertainty)
    assert not torch.equal(a.probs, c.probs)


def test_self_aligned_training_needs_the_ddp_head():
    model = build("synth_tiny_camera_ddp.yaml")
    batch = tiny_batch(1, model=model)
    _, losses = model(batch, self_aligned=True)
    assert torch.isfinite(losses["loss_ddp"])
    baseline = build("synth_tiny_fusion_baseline.yaml", "model.modalities=[camera]", "data.image_size=[160,288]")
    with pytest.raises(ConfigError, match="DDP head"):
        baseline(batch, self_aligned=True)


def test_missing_camera_runs_degraded_and_ignores_that_image():
    model = build("synth_tiny_camera_ddp.yaml").eval()
    batch = tiny_batch(1, model=model)
    batch["camera_valid"][0, 2] = False
    with pytest.warns(DegradedInputWarning, match="camera image"):
        bev = model.camera_features(batch)
    batch["img"][0, 2] = torch.randn_like(batch["img"][0, 2]) * 5  # the missing camera's pixels must not matter
    with pytest.warns(DegradedInputWarning):
        bev_changed = model.camera_features(batch)
    torch.testing.assert_close(bev, bev_changed)
    batch["camera_valid"][0, 2] = True
    assert not torch.allclose(model.camera_features(batch), bev)  # while a valid camera's pixels do
    with pytest.warns(DegradedInputWarning):
        batch["camera_valid"][0, 2] = False
        preds = model.predict(batch, steps=[1])
    assert torch.isfinite(preds[1].probs).all()


def test_sample_without_lidar_points_runs_degraded():
    model = build("synth_tiny_fusion_ddp.yaml").eval()
    batch = tiny_batch(2)
    batch["points"][1] = batch["points"][1][:0]  # [0, 5]
    with pytest.warns(DegradedInputWarning, match="no LiDAR points"):
        lidar = model.lidar_features(batch)
    assert lidar[0].abs().sum() > 0 and lidar[1].abs().sum() == 0
    batch["points"] = [p[:0] for p in batch["points"]]  # no point in the whole batch
    with pytest.warns(DegradedInputWarning):
        preds = model.predict(batch, steps=[1])
    assert torch.isfinite(preds[1].probs).all()
    with pytest.warns(DegradedInputWarning):
        _, losses = model.train()(batch)
    assert torch.isfinite(losses["loss_ddp"])


def test_bad_inputs_are_named():
    model = build("synth_tiny_fusion_baseline.yaml").eval()
    batch = tiny_batch(1)
    bad = dict(batch, img=batch["img"].clone())
    bad["img"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="img"):
        model.predict(bad)
    with pytest.raises(InputError, match="points of sample 0"):
        model.predict(dict(batch, points=[torch.zeros(10, 3)]))
    with pytest.raises(InputError, match="points of sample 0"):
        model.predict(dict(batch, points=[torch.full((4, 5), float("inf"))]))
    with pytest.raises(InputError, match="gt_masks_bev"):
        model({k: v for k, v in batch.items() if k != "gt_masks_bev"})
    with pytest.raises(InputError, match="steps"):
        model.predict(batch, steps=[0])
