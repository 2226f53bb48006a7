"""One geometry validator (``bev_ddp.data.geometry``) for info files, ``prepare``, the model's batch and
the Python API; one image check in the API.  Each bad value ends in one InputError naming it, never a
``torch.linalg`` error or a silent cast."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bev_ddp.data.geometry import check_intrinsics, check_invertible, check_rigid
from bev_ddp.errors import InputError

CONFIG = "configs/bev/synth_tiny_fusion_ddp.yaml"


def _rotation(yaw: float) -> np.ndarray:
    m = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = [1.0, -2.0, 1.5]
    return m


# ------------------------------------------------------------------------------ the validator
def test_check_rigid_accepts_rotations_and_refuses_everything_else():
    check_rigid(_rotation(0.7).astype(np.float32), "ok")
    singular, scaled, mirrored, sheared, bottom = (_rotation(0.3) for _ in range(5))
    singular[:3, :3] = 0
    scaled[:3, :3] *= 2
    mirrored[0, :3] *= -1
    sheared[0, 1] += 0.1
    bottom[3, 0] = 1.0
    for name, m in dict(singular=singular, scaled=scaled, mirrored=mirrored, sheared=sheared, bottom=bottom).items():
        with pytest.raises(InputError, match=f"^{name} is not a rigid transform"):
            check_rigid(m, name)
    with pytest.raises(InputError, match="^nan must be a finite 4x4 matrix"):
        check_rigid(np.full((4, 4), np.nan), "nan")


def test_check_intrinsics_and_check_invertible():
    k = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    check_intrinsics(k, "k")
    with pytest.raises(InputError, match=r"^zero has focal lengths fx=0.0"):
        check_intrinsics(np.diag([0.0, 0.0, 1.0]), "zero")
    with pytest.raises(InputError, match="^flat is singular"):
        check_intrinsics(np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 0]]), "flat")
    check_invertible(np.diag([2.0, -1.0, 1.0, 1.0]), "scale and flip")
    with pytest.raises(InputError, match="^aug must be a finite"):
        check_invertible(np.full((4, 4), np.nan), "aug")


# ------------------------------------------------------------------------------ info files, prepare
@pytest.fixture(scope="module")
def infos(tmp_path_factory):
    from bev_ddp.data.create_infos import create_infos
    from bev_ddp.data.synthetic import tiny_world

    world = tiny_world(tmp_path_factory.mktemp("geometry") / "w", samples_per_scene=1)
    return world, create_infos(world, "v1.0-mini", world / "infos")


def test_an_info_record_with_a_singular_camera2lidar_is_refused(infos, tmp_path):
    from bev_ddp.data.infos import read_infos

    _, paths = infos
    doc = json.loads(paths["train"].read_text())
    doc["infos"][0]["cams"]["CAM_BACK"]["camera2lidar"] = np.diag([1.0, 1.0, 0.0, 1.0]).tolist()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=rf"^info file {bad}: record 0 cams.CAM_BACK.camera2lidar is not a rigid"):
        read_infos(bad)


def test_prepare_from_pkl_refuses_a_singular_calibration(infos, tmp_path, capsys):
    import pickle

    from bev_ddp.cli import main

    world, _ = infos
    record = {"token": "t", "lidar_path": "x.bin", "timestamp": 1, "location": "boston-seaport", "sweeps": [],
              "lidar2ego_rotation": [1, 0, 0, 0], "lidar2ego_translation": [0, 0, 0],
              "ego2global_rotation": [1, 0, 0, 0], "ego2global_translation": [0, 0, 0],
              "cams": {"CAM_FRONT": {"data_path": "c.jpg", "timestamp": 1, "camera_intrinsics": np.eye(3).tolist(),
                                     "sensor2lidar_rotation": np.zeros((3, 3)).tolist(),
                                     "sensor2lidar_translation": [0, 0, 0],
                                     "sensor2ego_rotation": [1, 0, 0, 0], "sensor2ego_translation": [0, 0, 0],
                                     "ego2global_rotation": [1, 0, 0, 0], "ego2global_translation": [0, 0, 0]}}}
    pkl = tmp_path / "legacy.pkl"
    pkl.write_bytes(pickle.dumps({"infos": [record], "metadata": {}}))
    out = tmp_path / "out"
    code = main(["prepare", "--dataroot", str(world), "--from-pkl", str(pkl), "--allow-pickle", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"info file {pkl}: record 0 cams.CAM_FRONT.camera2lidar is not a rigid" in err
    assert not list(out.glob("*.json"))


# ------------------------------------------------------------------------------ model batch, API
@pytest.fixture(scope="module")
def model():
    import bev_ddp

    torch.manual_seed(0)
    return bev_ddp.init_model(CONFIG)


def _raw(**changes):
    raw = dict(images=[np.full((32, 56, 3), 128, np.uint8)] * 6, points=np.random.rand(200, 4).astype(np.float32),
               intrinsics=np.tile(np.diag([40.0, 40.0, 1.0]), (6, 1, 1)),
               camera2lidar=np.stack([_rotation(i) for i in range(6)]))
    raw.update(changes)
    return raw


def _with(name, index, value):
    raw = _raw()
    array = np.array(raw[name])
    array[index] = value
    return _raw(**{name: array})


@pytest.mark.parametrize("raw, message", [
    (_with("intrinsics", (2, 0, 0), 0.0), r"intrinsics\[2\] \(CAM_FRONT_LEFT\)? has focal lengths fx=0.0"),
    (_with("camera2lidar", (1, 0, 0), 3.0), r"camera2lidar\[1\] \(\w+\) is not a rigid transform"),
    (_with("camera2lidar", (1, 0, 0), np.nan), r"camera2lidar\[1\] \(\w+\) must be a finite 4x4"),
    (_raw(images=[np.random.rand(32, 56, 3)] * 6), r"image of CAM_FRONT must be uint8 \[H, W, 3\] RGB, got float64"),
    (_raw(images=[np.full((32, 56, 3), 300, np.uint16)] * 6), r"must be uint8 \[H, W, 3\] RGB, got uint16"),
    (_raw(points=np.full((10, 4), 3e38, np.float64)), r"points holds 10 point\(s\) whose x is NaN, inf or beyond"),
])
def test_raw_api_inputs_are_checked_before_use(model, raw, message):
    import bev_ddp

    with pytest.raises(InputError, match=message):
        bev_ddp.inference_bev(model, raw, steps=1)


@pytest.mark.parametrize("key, index, value, message", [
    ("intrinsics", (0, 3, 0, 0), 0.0, r"batch\['geometry'\].intrinsics\[0, 3\] has focal lengths"),
    ("lidar_aug", (0, 1, 1), float("nan"), r"batch\['geometry'\].lidar_aug\[0\] must be a finite"),
    ("camera2lidar", (0, 2), torch.zeros(4, 4), r"batch\[.geometry.\]\.camera2lidar\[0, 2\] is not a rigid transform"),
])
def test_model_predict_checks_the_batch_geometry(model, key, index, value, message):
    import bev_ddp

    batch = bev_ddp.build_batch(model, **_raw())
    getattr(batch["geometry"], key)[index] = value
    with pytest.raises(InputError, match=message):
        model.predict(batch, steps=[1])
