"""Info creation (`bev-ddp prepare`), the synth command, pickle opt-in and malformed tables."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes

from bev_ddp.cli import main
from bev_ddp.data.info_import import import_info_pickle
from bev_ddp.data.infos import read_infos
from bev_ddp.data.sensors import CAMERA_NAMES
from bev_ddp.data.splits import split_scenes
from bev_ddp.errors import InputError
from bev_ddp.data.create_infos import create_infos


def test_infos_match_the_devkit(world, infos):
    nusc = NuScenes(version="v1.0-mini", dataroot=str(world), verbose=False)
    meta, records = read_infos(infos["val"])
    assert meta["split"] == "val" and [r["scene_name"] for r in records] == ["synth-0001"] * 3
    rec = records[2]
    sample = nusc.get("sample", rec["token"])
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    assert rec["lidar_path"] == lidar_sd["filename"]
    assert [s["time_lag"] for s in rec["sweeps"]] == pytest.approx([0.05 * (i + 1) for i in range(10)])
    assert set(rec["cams"]) == set(CAMERA_NAMES)
    # camera→lidar agrees with the camera→ego and lidar→ego calibrations (same ego pose here)
    cam = rec["cams"]["CAM_FRONT_LEFT"]
    expected = np.linalg.inv(np.asarray(rec["lidar2ego"])) @ np.asarray(cam["camera2ego"])
    np.testing.assert_allclose(np.asarray(cam["camera2lidar"]), expected, atol=1e-9)
    # a sweep's transform moves its sensor origin to where the sensor was, in the keyframe frame
    sweep_sd = nusc.get("sample_data", lidar_sd["prev"])
    pose = nusc.get("ego_pose", sweep_sd["ego_pose_token"])
    origin = np.asarray(rec["sweeps"][0]["sensor2lidar"])[:3, 3]
    g2l = np.linalg.inv(np.asarray(rec["ego2global"]) @ np.asarray(rec["lidar2ego"]))
    from bev_ddp.data.geometry import record_to_matrix

    calib = nusc.get("calibrated_sensor", sweep_sd["calibrated_sensor_token"])
    np.testing.assert_allclose(origin, (g2l @ record_to_matrix(pose) @ record_to_matrix(calib))[:3, 3], atol=1e-9)


def test_split_rules():
    assert split_scenes(["scene-0061", "scene-0103", "scene-0553", "scene-0655", "scene-0757", "scene-0796",
                         "scene-0916", "scene-1077", "scene-1094", "scene-1100"], "v1.0-mini")[1] == "official"
    split, source = split_scenes([f"s{i}" for i in range(8)], "v1.0-mini")
    assert source == "deterministic" and split == {"train": [f"s{i}" for i in range(6)], "val": ["s6", "s7"]}
    assert split_scenes(["only"], "v1.0-mini")[0] == {"train": ["only"], "val": ["only"]}


def test_cli_synth_and_prepare(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["synth", "--out", str(out), "--scenes", "2", "--samples-per-scene", "1", "--image-size", "18", "32",
                 "--lidar-columns", "60", "--seed", "7", "--export-image-tasks", str(tmp_path / "tasks")]) == 0
    assert len(list((tmp_path / "tasks" / "depth" / "val").glob("*.png"))) == 6
    assert main(["prepare", "--dataroot", str(out), "--version", "v1.0-mini"]) == 0
    _, records = read_infos(out / "infos" / "bev_ddp_infos_train.json")
    assert len(records) == 1 and records[0]["cams"]["CAM_FRONT"]["height"] == 18
    assert main(["prepare", "--dataroot", str(tmp_path / "nowhere"), "--version", "v1.0-mini"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_malformed_table_names_the_file(world, tmp_path):
    root = tmp_path / "root"
    (root / "v1.0-mini").mkdir(parents=True)
    for table in (world / "v1.0-mini").iterdir():
        (root / "v1.0-mini" / table.name).symlink_to(table)
    (root / "v1.0-mini" / "sample_data.json").unlink()
    (root / "v1.0-mini" / "sample_data.json").write_text('[{"token": "a", ')
    with pytest.raises(InputError, match="sample_data.json"):
        create_infos(root, "v1.0-mini")
    (root / "v1.0-mini" / "ego_pose.json").unlink()
    with pytest.raises(InputError, match="ego_pose.json"):
        create_infos(root, "v1.0-mini")


def test_older_layout_pickle_converts_without_running_code(tmp_path):
    record = {
        "token": "t", "timestamp": 2_000_000, "lidar_path": "/data/nuscenes/samples/LIDAR_TOP/x.pcd.bin",
        "lidar2ego_rotation": [1, 0, 0, 0], "lidar2ego_translation": [1, 0, 2],
        "ego2global_rotation": [1, 0, 0, 0], "ego2global_translation": [5, 6, 0],
        "sweeps": [{"data_path": "/data/nuscenes/sweeps/LIDAR_TOP/y.pcd.bin", "timestamp": 1_950_000,
                    "sensor2lidar_rotation": np.eye(3), "sensor2lidar_translation": np.zeros(3)}],
        "cams": {"CAM_FRONT": {"data_path": "/data/nuscenes/samples/CAM_FRONT/z.jpg", "timestamp": 2_000_000,
                               "camera_intrinsics": np.eye(3), "sensor2ego_rotation": [1, 0, 0, 0],
                               "sensor2ego_translation": [0, 0, 1], "sensor2lidar_rotation": np.eye(3),
                               "sensor2lidar_translation": np.zeros(3), "ego2global_rotation": [1, 0, 0, 0],
                               "ego2global_translation": [5, 6, 0]}},
    }
    path = tmp_path / "nuscenes_infos_val.pkl"
    path.write_bytes(pickle.dumps({"infos": [record], "metadata": {"version": "v1.0-trainval"}}))
    with pytest.raises(InputError, match="--location"):
        import_info_pickle(path, tmp_path)
    (converted,) = import_info_pickle(path, tmp_path, location="boston-seaport").infos
    assert converted["location"] == "boston-seaport" and converted["scene_name"] == "x.pcd.bin"
    assert converted["lidar_path"] == "samples/LIDAR_TOP/x.pcd.bin"
    assert converted["sweeps"][0]["time_lag"] == pytest.approx(0.05)
    assert converted["cams"]["CAM_FRONT"]["camera2ego"][2][3] == 1.0


def test_synth_refuses_to_overwrite_a_foreign_dataset_and_bad_sizes(tmp_path, capsys):
    foreign = tmp_path / "nuscenes"
    (foreign / "v1.0-mini").mkdir(parents=True)
    (foreign / "v1.0-mini" / "scene.json").write_text("[]")
    assert main(["synth", "--out", str(foreign), "--scenes", "1", "--samples-per-scene", "1"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert (foreign / "v1.0-mini" / "scene.json").read_text() == "[]"
    assert main(["synth", "--out", str(tmp_path / "x"), "--image-size", "4", "32"]) == 2
    assert "image_size" in capsys.readouterr().err


def test_records_missing_fields_name_the_tables(world, tmp_path):
    import json

    root = tmp_path / "root"
    (root / "v1.0-mini").mkdir(parents=True)
    for table in (world / "v1.0-mini").iterdir():
        (root / "v1.0-mini" / table.name).symlink_to(table)
    (root / "maps").symlink_to(world / "maps", target_is_directory=True)
    rows = json.loads((world / "v1.0-mini" / "sample_data.json").read_text())
    for row in rows:
        row.pop("filename")
    (root / "v1.0-mini" / "sample_data.json").unlink()
    (root / "v1.0-mini" / "sample_data.json").write_text(json.dumps(rows))
    with pytest.raises(InputError, match="filename"):
        create_infos(root, "v1.0-mini")


def test_data_tools_script_is_the_prepare_command(world, infos, tmp_path):
    """data_tools/create_infos.py runs `bev-ddp prepare` (its bad input: test_cli_synth_and_prepare): same files."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    script = [sys.executable, str(repo / "data_tools" / "create_infos.py"), "--version", "v1.0-mini"]
    run = subprocess.run([*script, "--dataroot", str(world), "--out", str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for split, path in infos.items():
        assert read_infos(tmp_path / path.name) == read_infos(path), split
