"""Synthetic (image, label, depth) export for the image segmentation and depth tasks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bev_ddp.data.sensors import CAMERA_RIG
from bev_ddp.data.synthetic import export_image_tasks
from bev_ddp.data.synthetic.render import SEG_CLASSES
from bev_ddp.errors import InputError


@pytest.fixture(scope="module")
def exported(world, tmp_path_factory):
    return export_image_tasks(world, tmp_path_factory.mktemp("export") / "tasks")


def test_layout_and_meta(exported):
    meta = json.loads((exported / "meta.json").read_text())
    assert meta["classes"] == list(SEG_CLASSES) and meta["depth_scale"] == 1000.0
    assert meta["counts"] == {"train": 18, "val": 18}
    names = sorted(p.stem for p in (exported / "images" / "val").glob("*.jpg"))
    assert names == sorted(p.stem for p in (exported / "labels" / "val").glob("*.png"))
    assert names == sorted(p.stem for p in (exported / "depth" / "val").glob("*.png"))
    assert all(n.startswith("synth-0001_") for n in names)


def test_labels_and_depth_agree_with_geometry(exported):
    name = sorted((exported / "labels" / "train").glob("synth-0000_CAM_FRONT_*.png"))[0].stem
    label = np.asarray(Image.open(exported / "labels" / "train" / f"{name}.png"))
    depth_png = Image.open(exported / "depth" / "train" / f"{name}.png")
    depth = np.asarray(depth_png).astype(np.float64) / 1000.0
    image = np.asarray(Image.open(exported / "images" / "train" / f"{name}.jpg"))
    assert label.shape == depth.shape == image.shape[:2] == (96, 176)
    assert np.asarray(depth_png).dtype == np.uint16
    assert set(np.unique(label)) >= {0, 2}  # sky and road ahead
    assert (label[:40] == 2).sum() == 0  # nothing on the ground above the horizon (row ~52)
    assert (depth[label == 0] == 0).all() and (depth[label != 0] > 0).mean() > 0.5  # 0 also beyond 65.5 m
    # level camera: a ground pixel in row v sees depth = height · fy / (v + 0.5 - cy)
    spec = CAMERA_RIG["CAM_FRONT"]
    k = spec.intrinsics((96, 176))
    rows = np.arange(96)[:, None] + 0.5
    expected = spec.translation[2] * k[1, 1] / (rows - k[1, 2])
    ground = (label >= 1) & (label <= 7) & (depth > 0)
    np.testing.assert_allclose(depth[ground], np.broadcast_to(expected, depth.shape)[ground], atol=2e-3)
    # the sky is bright blue-grey, the road dark
    assert image[label == 0].mean() > image[label == 2].mean() + 60


def test_export_needs_a_synthetic_dataroot(tmp_path):
    with pytest.raises(InputError, match="synthetic_world.json"):
        export_image_tasks(tmp_path, tmp_path / "out")
