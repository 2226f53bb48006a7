"""Values checked where they enter: config keys, info-file fields, checkpoint metadata and weights.
Each case exits 2 (or raises InputError) with one line naming the offending key, field or file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_helpers import HERE, ROOT, one_line, write_toy_config

from bev_ddp.cli import main
from bev_ddp.errors import InputError


# ------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"),
    ("train.num_workers=-1", "train.num_workers"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.iters=-1", "train.iters"),
    ("eval.steps=[1,0]", "eval.steps[1]"),
])
def test_bad_config_values_name_their_key(override, key, tmp_path, toy_task, capsys):
    assert main(["train", str(write_toy_config(tmp_path)), override, "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err, "bev-ddp train: error:")
    assert f"config key {key} " in line
    assert not (tmp_path / "work").exists()  # rejected before any output


def test_base_list_with_a_non_file_entry_is_a_config_error(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("task: bev\n")
    (tmp_path / "b.yaml").write_text("_base_: [a.yaml, 5]\n")
    assert main(["train", str(tmp_path / "b.yaml")]) == 2
    assert "_base_ must be a file name or a list of file names" in one_line(capsys.readouterr().err, "bev-ddp train:")


# ------------------------------------------------------------------------------------ info files
@pytest.fixture(scope="module")
def info_record(tmp_path_factory):
    """(dataroot, metadata, one valid record) of a one-scene synthetic world."""
    from bev_ddp.data.infos import read_infos
    from bev_ddp.data.synthetic import generate_world
    from bev_ddp.data.create_infos import create_infos

    root = generate_world(tmp_path_factory.mktemp("infos") / "w", num_scenes=2, samples_per_scene=1, seed=0,
                          image_size=(32, 56), lidar_azimuth_steps=60)
    paths = create_infos(root, "v1.0-mini", root / "infos", max_sweeps=1)
    meta, records = read_infos(paths["train"])
    return root, meta, records[0]


def _edited(info_record, tmp_path, edit):
    """An info file holding the edited record, written as plain JSON (write_infos refuses bad records)."""
    root, meta, record = info_record
    record = json.loads(json.dumps(record))
    edit(record)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({"metadata": meta, "infos": [record]}))
    return path


def _set(path: str, value):
    def edit(record):
        node = record
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set("timestamp", "yesterday"), "timestamp must be an integer"),
    (_set("cams.CAM_FRONT.width", "wide"), "cams.CAM_FRONT.width must be an integer"),
    (_set("sweeps.0.time_lag", "late"), "sweeps[0].time_lag must be a number"),
    (_set("cams.CAM_FRONT.intrinsics", [[0, 0, 0], [0, 0, 0], [0, 0, 1]]), "focal lengths"),
    (_set("cams.CAM_BACK.camera2lidar", [[float("nan")] * 4] * 4), "cams.CAM_BACK.camera2lidar"),
    (_set("cams.CAM_BACK.camera2lidar", [["1", "0", "0", "0"]] * 4), "cams.CAM_BACK.camera2lidar"),
    (_set("lidar_path", "../../etc/passwd"), "outside the dataroot"),
    (_set("cams.CAM_FRONT.path", "/etc/hostname"), "outside the dataroot"),
])
def test_bad_info_values_are_rejected_at_load_time(info_record, tmp_path, edit, message):
    from bev_ddp.data.nuscenes import NuScenesBEVDataset

    path = _edited(info_record, tmp_path, edit)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        NuScenesBEVDataset(path, info_record[0], image_size=(32, 56), load_sweeps=1)


def test_paths_outside_the_dataroot_only_with_the_flag(info_record, tmp_path):
    from bev_ddp.data.nuscenes import NuScenesBEVDataset

    root = info_record[0]
    outside = _edited(info_record, tmp_path, _set("lidar_path", str(root / info_record[2]["lidar_path"])))
    ds = NuScenesBEVDataset(outside, root, image_size=(32, 56), load_sweeps=1, allow_outside_dataroot=True,
                            with_labels=False)
    assert len(ds[0]["points"]) > 0


def test_an_empty_keyframe_point_cloud_is_missing_lidar(info_record, tmp_path):
    from bev_ddp.data.nuscenes import NuScenesBEVDataset

    root = tmp_path / "root"
    os.symlink(info_record[0], tmp_path / "orig")
    root.mkdir()
    for name in os.listdir(info_record[0]):
        os.symlink(info_record[0] / name, root / name)
    (root / "empty.pcd.bin").write_bytes(b"")
    path = _edited(info_record, tmp_path, _set("lidar_path", "empty.pcd.bin"))
    with pytest.raises(InputError, match="empty.pcd.bin is empty"):
        NuScenesBEVDataset(path, root, image_size=(32, 56), load_sweeps=1, with_labels=False)[0]
    sample = NuScenesBEVDataset(path, root, image_size=(32, 56), load_sweeps=1, with_labels=False,
                                allow_missing_lidar=True)[0]
    assert sample["meta"]["lidar_missing"] is True and len(sample["points"]) == 0


def test_replay_skips_a_frame_whose_camera2lidar_is_not_finite():
    from bev_ddp.data.structures import CameraGeometry
    from bev_ddp.replay.runner import non_finite_geometry

    eye = torch.eye(4).expand(6, 4, 4).clone()
    geometry = CameraGeometry(intrinsics=eye, camera2lidar=eye.clone(), img_aug=eye, lidar_aug=torch.eye(4),
                              camera2ego=eye, lidar2ego=torch.eye(4))
    assert non_finite_geometry({"geometry": geometry}) == []
    geometry.camera2lidar[2, 0, 3] = float("nan")
    assert non_finite_geometry({"geometry": geometry}) == ["camera2lidar"]


# ------------------------------------------------------------------------------------ checkpoints
def _edited_checkpoint(toy_checkpoint, tmp_path, **changes):
    ckpt = torch.load(toy_checkpoint[1], weights_only=True)
    for key, value in changes.items():
        ckpt[key] = value
    path = tmp_path / "edited.pth"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("change, message", [
    ({"format": 99}, "format=99"),
    ({"step": -5}, "step=-5"),
    ({"model_fingerprint": "0123456789abcdef"}, "model_fingerprint"),
])
def test_checkpoint_metadata_is_checked_on_eval(change, message, tmp_path, toy_task, toy_checkpoint, capsys):
    path = _edited_checkpoint(toy_checkpoint, tmp_path, **change)
    assert main(["eval", str(toy_checkpoint[0]), str(path), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert message in one_line(capsys.readouterr().err, "bev-ddp eval: error:")


@pytest.mark.parametrize("change, message", [
    ({"format": 99}, "99"),
    ({"step": -5}, "step=-5"),
])
def test_checkpoint_metadata_is_checked_on_resume(change, message, tmp_path, toy_task, toy_checkpoint, capsys):
    path = _edited_checkpoint(toy_checkpoint, tmp_path, **change)
    config = write_toy_config(tmp_path)
    assert main(["train", str(config), "--resume", str(path), "--no-progress"]) == 2
    assert message in one_line(capsys.readouterr().err, "bev-ddp train: error:")


def test_resume_with_another_models_checkpoint_lists_the_keys(tmp_path, toy_task, toy_checkpoint, capsys):
    ckpt = torch.load(toy_checkpoint[1], weights_only=True)
    ckpt["model"]["conv.weight"] = torch.zeros(2, 9, 1, 1)
    ckpt["model"]["head.extra"] = torch.zeros(1)
    path = tmp_path / "other.pth"
    torch.save(ckpt, path)
    assert main(["train", str(write_toy_config(tmp_path)), "--resume", str(path), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err, "bev-ddp train: error:")
    assert "unexpected keys: head.extra" in line and "conv.weight: checkpoint (2, 9, 1, 1)" in line


def test_nan_weights_name_the_checkpoint_and_the_weight(tmp_path, toy_task, toy_checkpoint, capsys):
    ckpt = torch.load(toy_checkpoint[1], weights_only=True)
    ckpt["model"]["conv.bias"][0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(ckpt, path)
    for argv in (["eval", str(toy_checkpoint[0]), str(path), "--out", str(tmp_path / "r")],
                 ["train", str(write_toy_config(tmp_path)), "--resume", str(path)]):
        assert main([*argv, "--no-progress"]) == 2
        line = one_line(capsys.readouterr().err, f"bev-ddp {argv[0]}: error:")
        assert str(path) in line and "NaN or inf weights: conv.bias" in line


@pytest.mark.parametrize("content, message", [
    (b"", "is empty (0 bytes)"),
    (np.random.default_rng(0).bytes(4096), "could not be read"),
])
def test_unreadable_checkpoints_say_why_without_torch_advice(content, message, tmp_path, toy_task, toy_checkpoint,
                                                              capsys):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    assert main(["eval", str(toy_checkpoint[0]), str(path), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err, "bev-ddp eval: error:")
    assert message in line and "weights_only" not in line and line.rstrip()[-1] not in ":"


# ------------------------------------------------------------------------------------ leftovers
def test_stale_checkpoint_temporaries_are_removed_on_the_next_start(tmp_path, toy_task):
    from bev_ddp.config import load_config
    from bev_ddp.engine.trainer import Trainer

    work = tmp_path / "work"
    (work / "checkpoints").mkdir(parents=True)
    stale = [work / "checkpoints" / ".iter_0000004.pth.k3j2.tmp", work / ".latest.pth.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    cfg = load_config(write_toy_config(tmp_path), schema=toy_task.schema)
    Trainer(cfg=cfg, task=toy_task, work_dir=work, progress=False)
    assert not any(p.exists() for p in stale)


def test_log_is_cut_back_to_the_resumed_step(tmp_path, toy_task):
    from bev_ddp.config import load_config
    from bev_ddp.engine.trainer import train

    cfg = load_config(write_toy_config(tmp_path, iters=6), schema=toy_task.schema)
    work = tmp_path / "work"
    train(cfg, task=toy_task, work_dir=work, progress=False, final_eval=False)
    # a SIGKILL after step 6 but before its checkpoint: the log is ahead of iter_0000004.pth
    train(cfg, task=toy_task, work_dir=work, progress=False, final_eval=False,
          resume=work / "checkpoints" / "iter_0000004.pth")
    steps = [json.loads(line)["step"] for line in (work / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_replay_max_frames_zero_is_rejected(tmp_path, replay_bag, capsys):
    rc = main(["replay", str(replay_bag["config"]), "--bag", str(replay_bag["bag"]), "--out", str(tmp_path / "o"),
               "--max-frames", "0"])
    assert rc == 2 and "--max-frames" in one_line(capsys.readouterr().err, "bev-ddp replay: error:")
    assert not (tmp_path / "o").exists()


def test_a_closed_stdout_ends_with_one_line_not_a_traceback(tmp_path, toy_checkpoint):
    config, ckpt = toy_checkpoint
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(HERE / "fault_driver.py"), "eval", str(config), str(ckpt),
                             "--out", str(tmp_path / "r"), "--no-progress", "--steps", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # as `bev-ddp eval ... | head -0` would
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "broken pipe" in one_line(err, "bev-ddp eval:")
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["steps"]  # the report was written first


@pytest.mark.parametrize("command", ["report", "info"])
def test_a_closed_stdout_under_a_rich_table_exits_141_too(command, tmp_path):
    """rich exits 1 on a closed stdout by itself; the commands printing tables through it end as eval does."""
    metrics = {"task": "toy", "metric": "IoU", "classes": ["road"],
               "steps": {"1": {"per_class": {"road": 0.5}, "summary": {"mIoU": 0.5}}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    args = {"report": [str(tmp_path / "metrics.json"), "--out", str(tmp_path / "r")],
            "info": [str(write_toy_config(tmp_path))]}[command]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(HERE / "fault_driver.py"), command, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # as `bev-ddp report ... | head -n 1` would, before the table is printed
    err = proc.stderr.read().decode()
    assert proc.wait() == 141, err
    assert "broken pipe" in one_line(err, f"bev-ddp {command}:")
