"""`bev-ddp prepare --from-infos` on the real mmdet3d / BEVFusion info pickles in ../shared/real.

Oracles: mmdet3d's own ``lidar2cam`` (1.x) and the older layout's per-camera ego poses, which our
conversion of the other layout must reproduce; the malicious pickle must not run.
"""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from real_frames import KEYFRAME_PKL, real_path, trusted_pickle

from bev_ddp.cli import main
from bev_ddp.data.info_import import import_info_pickle
from bev_ddp.data.infos import read_infos
from bev_ddp.data.nuscenes import NuScenesBEVDataset
from bev_ddp.errors import InputError

LEGACY = "nuscenes_legacy_infos"


def _prepare(capsys, *args) -> tuple[int, str]:
    code = main(["prepare", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_both_layouts_import_to_the_same_calibration(tmp_path, capsys):
    flat = real_path("nuscenes_keyframe")
    pkls = {"v2": real_path(KEYFRAME_PKL), "bevfusion": real_path(f"{LEGACY}/bevfusion_infos_keyframe.pkl"),
            "mmdet3d_v0": real_path(f"{LEGACY}/mmdet3d_v0_infos_keyframe.pkl")}
    code, out = _prepare(capsys, "--from-infos", pkls["v2"], "--dataroot", flat, "--out", tmp_path)
    assert code == 2 and "--location" in out and KEYFRAME_PKL.split("/")[1] in out  # 1.x stores no location
    records = {}
    for name, pkl in pkls.items():
        code, out = _prepare(capsys, "--from-infos", pkl, "--dataroot", flat, "--out", tmp_path / name,
                             "--location", "singapore-onenorth")
        assert code == 0, out
        (path,) = (tmp_path / name).glob("bev_ddp_infos_*.json")
        (records[name],) = read_infos(path, dataroot=flat)[1]
    v2 = records["v2"]
    assert records["bevfusion"]["location"] == "singapore-onenorth"  # from the pickle itself
    assert v2["timestamp"] == records["bevfusion"]["timestamp"] == 1532402927647951
    oracle = trusted_pickle(pkls["v2"])["data_list"][0]
    for cam, raw in oracle["images"].items():
        ours = v2["cams"][cam]
        assert (flat / ours["path"]).is_file() and (ours["width"], ours["height"]) == (1600, 900)
        # camera → lidar is mmdet3d's lidar2cam inverted
        np.testing.assert_allclose(np.linalg.inv(ours["camera2lidar"]), raw["lidar2cam"], atol=1e-9)
        for other in ("bevfusion", "mmdet3d_v0"):
            theirs = records[other]["cams"][cam]
            assert theirs["path"] == ours["path"]  # './data/nuscenes/samples/<CAM>/<file>' found flat
            np.testing.assert_allclose(theirs["intrinsics"], ours["intrinsics"], atol=1e-6)
            for key in ("camera2ego", "camera2lidar", "ego2global"):  # ego2global: recovered in 1.x, stored in 0.x
                np.testing.assert_allclose(theirs[key], ours[key], atol=1e-6, err_msg=f"{other} {cam} {key}")
    for key in ("lidar2ego", "ego2global"):
        np.testing.assert_allclose(records["bevfusion"][key], v2[key], atol=1e-6)


def test_samples_layout_and_location_from_the_tables(tmp_path, capsys):
    flat = real_path("nuscenes_keyframe")
    root = tmp_path / "nuscenes"
    for f in flat.iterdir():  # the devkit layout: samples/<channel>/<file>
        if f.suffix != ".pkl":
            channel = f.name.split("__")[1]
            (root / "samples" / channel).mkdir(parents=True, exist_ok=True)
            (root / "samples" / channel / f.name).symlink_to(f)
    tables = root / "v1.0-mini"
    tables.mkdir()
    token = trusted_pickle(real_path(KEYFRAME_PKL))["data_list"][0]["token"]
    (tables / "sample.json").write_text(json.dumps([{"token": token, "scene_token": "s"}]))
    (tables / "scene.json").write_text(json.dumps([{"token": "s", "log_token": "l"}]))
    (tables / "log.json").write_text(json.dumps([{"token": "l", "location": "singapore-onenorth"}]))
    code, out = _prepare(capsys, "--from-infos", real_path(KEYFRAME_PKL), "--dataroot", root)
    assert code == 0, out
    (path,) = (root / "infos").glob("bev_ddp_infos_*.json")  # where prepare writes
    (record,) = read_infos(path, dataroot=root)[1]
    assert record["location"] == "singapore-onenorth"
    assert record["lidar_path"].startswith("samples/LIDAR_TOP/")
    assert record["cams"]["CAM_BACK"]["path"].startswith("samples/CAM_BACK/")
    assert "not under" not in out  # every file found


def test_legacy_fixture_imports_with_its_sweeps(tmp_path, capsys):
    root = real_path(LEGACY)
    pkl = root / "nus_info.pkl"
    code, out = _prepare(capsys, "--from-infos", pkl, "--dataroot", root, "--out", tmp_path,
                         "--location", "boston-seaport")
    assert code == 0, out
    assert "files of" in out  # its camera JPEGs are not in the fixture: reported, not fatal
    _, records = read_infos(tmp_path / "bev_ddp_infos_nus_info.json", dataroot=root)
    oracle = trusted_pickle(pkl)["data_list"]
    assert [len(r["sweeps"]) for r in records] == [len(o.get("lidar_sweeps", [])) for o in oracle] == [0, 2]
    for ours, raw in zip(records[1]["sweeps"], oracle[1]["lidar_sweeps"]):
        assert (root / ours["path"]).is_file() and ours["path"].startswith("sweeps/LIDAR_TOP/")
        # mmdet3d's quirk: a sweep's 'lidar2cam' holds its lidar2sensor, keyframe LiDAR → sweep LiDAR
        # (sensor2lidar inverted); the poses are float32, hence 0.1 mm (the sweep moved by ~4 mm)
        quirk = np.asarray(raw["lidar_points"]["lidar2cam"])
        np.testing.assert_allclose(np.linalg.inv(ours["sensor2lidar"]), quirk, atol=1e-4)
        assert np.abs(np.asarray(ours["sensor2lidar"]) - quirk).max() > 1e-3  # the direction is told apart
        assert ours["time_lag"] == pytest.approx(oracle[1]["timestamp"] - raw["timestamp"], abs=1e-6)
    # the dataset loads the keyframe with both sweeps (the cameras are absent: zero images)
    dataset = NuScenesBEVDataset(tmp_path / "bev_ddp_infos_nus_info.json", root, image_size=(32, 88),
                                 load_sweeps=3, with_labels=False)
    sample = dataset[1]
    lag = sample["points"][:, 4]
    sweep = np.fromfile(root / records[1]["sweeps"][0]["path"], np.float32).reshape(-1, 5)
    kept = int((np.linalg.norm(sweep[:, :2], axis=1) >= 1.0).sum())  # the dataset drops points within 1 m
    assert not sample["meta"]["skipped_sweeps"] and kept > 50
    assert int((lag > 0).sum()) == 2 * kept  # the fixture's two sweeps are the same LiDAR frame
    assert lag.max().item() == pytest.approx(records[1]["sweeps"][0]["time_lag"])


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_a_pickle_with_code_is_refused(tmp_path, capsys, monkeypatch):  # needs no real frame
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "nuscenes_infos_train.pkl"
    bad.write_bytes(pickle.dumps({"infos": [{"token": _Payload()}], "metadata": {}}))
    code, out = _prepare(capsys, "--from-infos", bad, "--dataroot", tmp_path)
    assert code == 2 and "system" in out and str(bad) in out
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    assert not (tmp_path / "infos" / "bev_ddp_infos_train.json").exists()


def test_a_bad_matrix_is_named(tmp_path):
    bad = tmp_path / "nuscenes_infos_train.pkl"
    real = trusted_pickle(real_path(KEYFRAME_PKL))
    real["data_list"][0]["images"]["CAM_FRONT"]["cam2img"] = [[0.0, 0, 1], [0, 0, 1], [0, 0, 1]]
    bad.write_bytes(pickle.dumps(real))
    with pytest.raises(InputError, match="CAM_FRONT.intrinsics"):
        import_info_pickle(bad, real_path("nuscenes_keyframe"), location="singapore-onenorth")
