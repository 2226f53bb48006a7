"""Every module the integration registers builds from an mmdet3d config dict, in mmdet3d's registries."""
from __future__ import annotations

import pytest
import torch

from mmdet3d_helpers import BEV_CONFIG

pytest.importorskip("mmdet3d", reason="the mmdet3d extra is not installed (make mmdet3d)")


def test_every_registered_module_builds_from_a_config_dict(registered, mmdet3d_world):
    from mmdet3d.registry import METRICS, MODELS, TRANSFORMS

    from bev_ddp.integrations.mmdet3d import (BEVDDPImageAug, BEVDDPMapHead, BEVDDPMapModel, BEVMapIoUMetric,
                                              BEVMapLabels, PackBEVMapInputs)

    model = MODELS.build(dict(type="BEVDDPMapModel", config=str(BEV_CONFIG), steps=[2, 1]))
    assert isinstance(model, BEVDDPMapModel) and model.steps == [2, 1]
    assert type(model.data_preprocessor).__name__ == "Det3DDataPreprocessor"
    head = MODELS.build(dict(type="BEVDDPMapHead", config=str(BEV_CONFIG), in_channels=48))
    assert isinstance(head, BEVDDPMapHead) and head.steps == [1, 3]  # the config's eval.steps
    built = [TRANSFORMS.build(dict(type="BEVDDPImageAug", image_size=[96, 176])),
             TRANSFORMS.build(dict(type="BEVMapLabels", dataroot=str(mmdet3d_world), xbound=[-8, 8, 1],
                                   ybound=[-8, 8, 1], map_raster="bevfusion")),
             TRANSFORMS.build(dict(type="PackBEVMapInputs"))]
    assert [type(t) for t in built] == [BEVDDPImageAug, BEVMapLabels, PackBEVMapInputs]
    metric = METRICS.build(dict(type="BEVMapIoUMetric", classes=["a", "b"], steps=[1]))
    assert isinstance(metric, BEVMapIoUMetric) and metric.prefix == "bev_map"


def test_map_head_on_foreign_bev_features_gives_losses_and_maps(registered):
    """The head alone, as on the fused features of mmdet3d's BEVFusion (list of [B, C, X, Y])."""
    from mmdet3d.registry import MODELS
    from mmdet3d.structures import Det3DDataSample

    head = MODELS.build(dict(type="BEVDDPMapHead", config=str(BEV_CONFIG), in_channels=48, steps=[1, 2]))
    feats = [torch.randn(2, 48, 32, 32)]  # the config's input_scope: ±32 m
    samples = [Det3DDataSample() for _ in range(2)]
    for s in samples:
        s.gt_masks_bev = torch.rand(6, 64, 64) > 0.7
    losses = head.loss(feats, samples)
    assert set(losses) == {"loss_ddp"} and torch.isfinite(losses["loss_ddp"])
    losses["loss_ddp"].backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    out = head.predict(feats, samples)
    assert out[0].pred_masks_bev.shape == (6, 64, 64) and set(out[0].pred_masks_bev_steps) == {1, 2}
    assert torch.equal(out[1].pred_masks_bev, out[1].pred_masks_bev_steps[1])
    assert 0 <= float(out[0].pred_masks_bev.min()) and float(out[0].pred_masks_bev.max()) <= 1
    with pytest.raises(Exception, match="gt_masks_bev"):
        head.loss(feats, [Det3DDataSample(), Det3DDataSample()])


def test_bad_input_names_what_is_wrong(registered, tmp_path):
    import subprocess
    import sys

    from mmdet3d.registry import METRICS, MODELS
    from mmdet3d.structures import Det3DDataSample

    from bev_ddp.errors import InputError
    from mmdet3d_helpers import ROOT

    with pytest.raises(InputError, match="task: bev"):
        MODELS.build(dict(type="BEVDDPMapModel", config=str(ROOT / "configs" / "seg" / "synth_tiny.yaml")))
    model = MODELS.build(dict(type="BEVDDPMapModel", config=str(BEV_CONFIG)))
    sample = Det3DDataSample()
    sample.set_metainfo(dict(cam2img=[torch.eye(3).numpy()] * 6))
    with pytest.raises(InputError, match="lidar2cam"):
        model(dict(imgs=torch.zeros(1, 6, 3, 96, 176), points=[torch.zeros(10, 5)]), [sample], mode="predict")
    with pytest.raises(InputError, match="mode"):
        model({}, [], mode="bogus")
    metric = METRICS.build(dict(type="BEVMapIoUMetric", classes=["a"], steps=[2]))
    with pytest.raises(InputError, match="step count 2"):
        metric.process({}, [dict(gt_masks_bev=torch.zeros(1, 4, 4), pred_masks_bev_steps={1: torch.zeros(1, 4, 4)})])
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "mmdet3d_run.py"), "train", str(tmp_path / "none.py")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "none.py does not exist" in run.stderr.strip().splitlines()[-1]
