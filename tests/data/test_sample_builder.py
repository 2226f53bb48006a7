"""The data layer's one sample builder: normalisation from the backbone's pretrained config, the
dataset built from in-memory records, raw sensor inputs giving the dataset's sample."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bev_ddp.data.nuscenes import AugConfig, NuScenesBEVDataset
from bev_ddp.data.sample_builder import SampleBuilder, SensorInputs
from bev_ddp.data.sensors import CAMERA_NAMES
from bev_ddp.data.transforms import ImageAugConfig
from bev_ddp.errors import InputError
from bev_ddp.nn.backbone import IMAGENET_NORMALISATION, image_normalisation


def test_normalisation_is_the_backbones_pretrained_config():
    assert IMAGENET_NORMALISATION.mean == (0.485, 0.456, 0.406) and IMAGENET_NORMALISATION.std == (0.229, 0.224, 0.225)
    for name in ("swin_tiny_patch4_window7_224", "convnext_tiny", "no_such_backbone"):
        assert image_normalisation(name) == IMAGENET_NORMALISATION
    inception = image_normalisation("inception_v3")  # timm's pretrained config says 0.5 / 0.5
    assert inception.mean == (0.5, 0.5, 0.5) and inception.std == (0.5, 0.5, 0.5)
    image = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(0))
    expected = (image - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert torch.equal(IMAGENET_NORMALISATION.apply(image), expected)
    assert torch.equal(inception.apply(image), (image - 0.5) / 0.5)


def _same_sample(a: dict, b: dict) -> None:
    assert torch.equal(a["img"], b["img"]) and torch.equal(a["points"], b["points"])
    assert torch.equal(a["camera_valid"], b["camera_valid"])
    for field in ("intrinsics", "camera2lidar", "img_aug", "lidar_aug", "camera2ego", "lidar2ego"):
        assert torch.equal(getattr(a["geometry"], field), getattr(b["geometry"], field)), field


@pytest.mark.parametrize("training", [False, True])
def test_the_dataset_reads_records_in_memory_as_it_reads_its_file(world, infos, training):
    path = infos["val"]
    records = json.loads(path.read_text())["infos"]
    kw = dict(image_size=(64, 128), load_sweeps=2, training=training, seed=3, aug=AugConfig())
    from_file, from_records = NuScenesBEVDataset(path, world, **kw), NuScenesBEVDataset(records, world, **kw)
    assert len(from_file) == len(from_records) == len(records)
    a, b = from_file[1], from_records[1]
    _same_sample(a, b)
    assert torch.equal(a["gt_masks_bev"], b["gt_masks_bev"])
    bad = [dict(records[0], lidar2ego=[[1.0, 0.0]])]  # checked as a file's records are
    with pytest.raises(InputError, match="lidar2ego"):
        NuScenesBEVDataset(bad, world, **kw)


def test_raw_sensor_inputs_build_the_evaluation_sample_of_the_dataset(world, infos):
    dataset = NuScenesBEVDataset(infos["val"], world, image_size=(64, 128), load_sweeps=1, with_labels=False)
    info = dataset.infos[0]
    cams = info["cams"]
    images = {n: np.asarray(Image.open(world / cams[n]["path"]).convert("RGB")) for n in CAMERA_NAMES}
    images[CAMERA_NAMES[2]] = None  # a missing camera: zero image, calibration kept
    key = np.fromfile(world / info["lidar_path"], dtype="<f4").reshape(-1, 5)
    frame = SensorInputs(
        points=np.concatenate([key[:, :4], np.zeros((len(key), 1), np.float32)], axis=1),
        images=images, image_sizes={n: (cams[n]["height"], cams[n]["width"]) for n in CAMERA_NAMES},
        intrinsics={n: np.asarray(cams[n]["intrinsics"]) for n in CAMERA_NAMES},
        camera2lidar={n: np.asarray(cams[n]["camera2lidar"]) for n in CAMERA_NAMES},
        camera2ego={n: np.asarray(cams[n]["camera2ego"]) for n in CAMERA_NAMES},
        lidar2ego=np.asarray(info["lidar2ego"]))
    built = SampleBuilder(image_size=(64, 128), image_aug=ImageAugConfig())(frame)
    expected = dataset[0]
    valid = [n != CAMERA_NAMES[2] for n in CAMERA_NAMES]
    assert built["camera_valid"].tolist() == valid and not built["img"][2].any()
    for c in np.flatnonzero(valid):
        assert torch.equal(built["img"][c], expected["img"][c])
    for field in ("intrinsics", "camera2lidar", "img_aug", "lidar_aug", "camera2ego", "lidar2ego"):
        assert torch.equal(getattr(built["geometry"], field), getattr(expected["geometry"], field)), field
    assert torch.equal(built["points"], expected["points"])
