"""DDP segmentor: losses, gradients, inference contract, determinism, bad input, parameter count."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.errors import ConfigError, InputError
from bev_ddp.seg.build import build_seg_model
from bev_ddp.seg.model import SegPrediction
from bev_ddp.seg.task import TASK
from seg_helpers import image_batch, tiny_cfg

H, W = 64, 96


def _model(*overrides: str):
    torch.manual_seed(0)
    return build_seg_model(tiny_cfg(TASK, "synth_tiny.yaml", *overrides))


def _batch(b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, 10, (b, H, W), generator=g)
    gt[:, :4] = 255
    return {"img": image_batch(b, H, W, seed=seed), "gt_seg": gt}


def test_losses_and_gradients_reach_every_part():
    model = _model()
    _, losses = model(_batch())
    assert set(losses) == {"loss_ddp", "loss_aux"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    for part in (model.encoder.backbone, model.encoder.fpn, model.encoder.merge, model.head.decoder,
                 model.head.label_encoder, model.aux_head):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), type(part).__name__
        assert any(g.abs().sum() > 0 for g in grads), type(part).__name__


def test_aux_weight_scales_aux_loss_and_zero_removes_the_head():
    a = _model()(_batch())[1]
    b = _model("model.aux_weight=0.8")(_batch())[1]
    assert torch.allclose(b["loss_aux"], 2 * a["loss_aux"])
    no_aux = _model("model.aux_weight=0")
    assert no_aux.aux_head is None and set(no_aux(_batch())[1]) == {"loss_ddp"}


def test_self_aligned_loss_differs_but_stays_finite():
    model = _model()
    torch.manual_seed(1)
    plain = model(_batch())[1]["loss_ddp"]
    torch.manual_seed(1)
    aligned = model(_batch(), self_aligned=True)[1]["loss_ddp"]
    assert torch.isfinite(aligned) and not torch.equal(plain, aligned)


def test_training_forward_is_bit_reproducible():
    losses = []
    for _ in range(2):
        model = _model()
        torch.manual_seed(5)
        losses.append(model(_batch())[1]["loss_ddp"])
    assert torch.equal(losses[0], losses[1])


def test_predict_contract_and_seed():
    model = _model().eval()
    batch = _batch()
    preds = model.predict(batch, steps=[3, 1], seed=0)
    assert sorted(preds) == [1, 3]
    for p in preds.values():
        assert isinstance(p, SegPrediction)
        assert p.labels.shape == (2, H, W) and p.labels.dtype == torch.int64
        assert int(p.labels.min()) >= 0 and int(p.labels.max()) < 10
        assert ((p.confidence > 0) & (p.confidence <= 1)).all()
        assert ((p.uncertainty >= 0) & (p.uncertainty <= 1)).all()
    assert (preds[1].uncertainty == 0).all()
    again = model.predict(batch, steps=[1, 3], seed=0)
    assert torch.equal(again[3].labels, preds[3].labels) and torch.equal(again[3].confidence, preds[3].confidence)
    other = model.predict(batch, steps=[3], seed=1)
    assert not torch.equal(other[3].confidence, preds[3].confidence)
    # a sample's prediction does not depend on the rest of the batch
    single = model.predict({"img": batch["img"][1:]}, steps=[3], seed=0)
    assert torch.allclose(single[3].confidence[0], preds[3].confidence[1], atol=1e-5)


def test_predict_resizes_to_ground_truth_size():
    model = _model().eval()
    preds = model.predict({"img": image_batch(1, H, W), "ori_size": torch.tensor([[128, 192]])}, steps=[1])
    assert preds[1].labels.shape == (1, 128, 192)
    with pytest.raises(InputError, match="batch_size 1"):
        model.predict({"img": image_batch(2, H, W), "ori_size": torch.tensor([[64, 96], [65, 96]])}, steps=[1])


def test_accumulate_averages_step_probabilities():
    model = _model("model.accumulate=true").eval()
    images = image_batch(1, H, W)
    preds = model.predict({"img": images}, steps=[3], seed=0)
    with torch.no_grad():
        out = model.head.predict(model.encoder(images), steps=3, seed=0, output_size=(H, W))
    mean = torch.stack([x.softmax(1) for x in out.step_logits]).mean(0)
    conf, labels = mean.max(1)
    assert torch.equal(preds[3].labels, labels) and torch.allclose(preds[3].confidence, conf)
    last_conf = out.logits.softmax(1).max(1).values
    assert not torch.allclose(preds[3].confidence, last_conf)


def test_one_window_covering_the_image_equals_whole_image_inference():
    whole = _model().eval()
    windowed = _model(f"model.inference.window_crop=[{H},{W}]", f"model.inference.window_stride=[{H},{W}]").eval()
    batch = {"img": image_batch(1, H, W)}
    a, b = whole.predict(batch, steps=[2]), windowed.predict(batch, steps=[2])
    assert torch.equal(a[2].labels, b[2].labels) and torch.allclose(a[2].confidence, b[2].confidence)
    two = _model("model.inference.window_crop=[64,64]", "model.inference.window_stride=[64,32]").eval()
    assert two.predict(batch, steps=[1])[1].labels.shape == (1, H, W)


def test_bad_input():
    model = _model()
    with pytest.raises(InputError, match="gt_seg"):
        model({"img": image_batch(2, H, W), "gt_seg": torch.zeros(2, H, W + 1, dtype=torch.long)})
    with pytest.raises(InputError, match="img"):
        model({"img": torch.zeros(2, H, W), "gt_seg": torch.zeros(2, H, W, dtype=torch.long)})
    with pytest.raises(InputError, match="outside"):
        model({"img": image_batch(1, H, W), "gt_seg": torch.full((1, H, W), 12)})
    with pytest.raises(InputError, match="steps"):
        model.predict({"img": image_batch(1, H, W)}, steps=[0])
    with pytest.raises(ConfigError, match="schedule"):
        _model("model.ddp.schedule=quadratic")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("backbone", ["swin_tiny_patch4_window7_224", "convnext_tiny"])
def test_parameter_count_at_tiny_backbone_matches_paper_order(backbone):
    """Paper Table 1: DDP with Swin-T has 40M parameters (ADE20K, 150 classes, 6-layer decoder)."""
    cfg = tiny_cfg(TASK, "ade20k_swin_t.yaml", f"model.backbone.name={backbone}")
    torch.manual_seed(0)
    model = build_seg_model(cfg)
    total = _count(model)
    parts = {"backbone": _count(model.encoder.backbone),
             "fpn+merge": _count(model.encoder.fpn) + _count(model.encoder.merge),
             "decoder": _count(model.head.decoder), "aux": _count(model.aux_head)}
    print(backbone, f"{total / 1e6:.2f}M", {k: f"{v / 1e6:.2f}M" for k, v in parts.items()})
    assert 38.5e6 < total < 41.5e6
    assert 8.0e6 < parts["decoder"] < 8.8e6  # Table 5d: 8.4M at L = 6


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_model_checkpoint_loads_the_whole_model_bit_for_bit(tmp_path):
    from bev_ddp.depth.build import build_depth_model
    from bev_ddp.depth.task import TASK as DEPTH

    saved = _model()
    path = tmp_path / "latest.pth"
    torch.save({"format": 1, "step": 7, "model": saved.state_dict()}, path)  # a training checkpoint's layout
    torch.manual_seed(1)
    assert not _same_weights(build_seg_model(tiny_cfg(TASK, "synth_tiny.yaml")), saved)  # another seed differs
    torch.manual_seed(1)
    assert _same_weights(build_seg_model(tiny_cfg(TASK, "synth_tiny.yaml", f"model.checkpoint={path}")), saved)
    # the whole-model file carries the backbone: a named backbone file is not required, nor read
    no_backbone = f"model.backbone.checkpoint={tmp_path / 'convnext_in1k.pth'}"
    with pytest.raises(InputError, match="allow_scratch"):
        _model(no_backbone)
    assert _same_weights(_model(no_backbone, f"model.checkpoint={path}"), saved)
    # depth goes through the same loader
    torch.manual_seed(0)
    depth = build_depth_model(tiny_cfg(DEPTH, "synth_tiny.yaml"))
    torch.save(depth.state_dict(), tmp_path / "depth.pth")
    torch.manual_seed(1)
    loaded = build_depth_model(tiny_cfg(DEPTH, "synth_tiny.yaml", f"model.checkpoint={tmp_path / 'depth.pth'}"))
    assert _same_weights(loaded, depth)


def test_model_checkpoint_missing_or_mismatched_is_one_clear_error(tmp_path):
    missing = tmp_path / "work_dirs" / "latest.pth"
    with pytest.raises(InputError, match=f"model.checkpoint: checkpoint file not found: {missing}"):
        _model(f"model.checkpoint={missing}")
    other = tmp_path / "other.pth"
    torch.save({"model": _model("model.num_classes=7").state_dict()}, other)
    with pytest.raises(InputError, match="model.checkpoint: checkpoint does not match") as info:
        _model(f"model.checkpoint={other}")
    assert "shape mismatch" in str(info.value) and "head.label_encoder.embedding.weight" in str(info.value)
