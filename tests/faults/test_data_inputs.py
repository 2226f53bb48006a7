"""Bad data files (LiDAR values, images) are named with their field, or flagged in the report."""
from __future__ import annotations

import numpy as np
import pytest

from bev_ddp.errors import InputError


def test_a_lidar_intensity_beyond_float_sums_names_the_file_and_the_field(tmp_path):
    from bev_ddp.data.lidar_io import load_points

    points = np.zeros((20, 5), np.float32)
    points[3, 3] = 3e38  # finite in float32, inf once summed in a voxel
    path = tmp_path / "huge.pcd.bin"
    points.astype("<f4").tofile(path)
    with pytest.raises(InputError, match=rf"^LiDAR file {path} holds 1 point\(s\) whose intensity is NaN, inf or beyond"):
        load_points(path)


@pytest.fixture(scope="module")
def blank_world(tmp_path_factory):
    """A tiny synthetic world whose every camera image is 0 bytes."""
    from bev_ddp.data.create_infos import create_infos
    from bev_ddp.data.synthetic import tiny_world

    world = tiny_world(tmp_path_factory.mktemp("blank") / "w", samples_per_scene=1)
    create_infos(world, "v1.0-mini", world / "infos")
    for image in (world / "samples").rglob("*.jpg"):
        image.write_bytes(b"")
    return world


@pytest.mark.parametrize("command", ["train", "eval"])
def test_every_camera_image_empty_is_refused_before_the_work(blank_world, tmp_path, capsys, command):
    from fault_helpers import ROOT, one_line

    from bev_ddp.cli import main

    config = str(ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml")
    overrides = [f"data.dataroot={blank_world}", f"train.work_dir={tmp_path / 'work'}", "train.iters=1", "train.self_aligned_iters=0"]
    args = [command, config, *overrides, "--no-progress"]
    if command == "eval":
        args[2:2] = [str(tmp_path / "none.pth")]
        import torch

        import bev_ddp

        torch.save({"model": bev_ddp.init_model(config).state_dict()}, tmp_path / "none.pth")
        args += ["--out", str(tmp_path / "report")]
    assert main(args) == 2
    line = one_line(capsys.readouterr().err, f"bev-ddp {command}: error:")
    assert "none of its camera images can be read" in line and "is empty (0 bytes)" in line
    assert not (tmp_path / "work" / "latest.pth").exists() and not (tmp_path / "report" / "metrics.json").exists()


def test_a_lidar_only_model_does_not_need_camera_images(blank_world):
    from omegaconf import OmegaConf

    from bev_ddp.bev.task import TASK
    from bev_ddp.config import load_config

    cfg = load_config("configs/bev/synth_tiny_fusion_ddp.yaml", [f"data.dataroot={blank_world}"], schema=TASK.schema)
    OmegaConf.update(cfg, "model.modalities", ["lidar"])
    assert len(TASK.build_dataset(cfg, "train")) > 0


def test_an_eval_with_some_camera_images_empty_notes_it_in_the_report(blank_world, tmp_path, capsys):
    """One real image left: the run goes on (zero images for the rest) and the report says so."""
    import json
    import shutil

    import torch
    from fault_helpers import ROOT

    import bev_ddp
    from bev_ddp.cli import main

    world = tmp_path / "w"
    shutil.copytree(blank_world, world, symlinks=True)
    from PIL import Image

    from bev_ddp.data.infos import read_infos

    _, infos = read_infos(world / "infos" / "bev_ddp_infos_val.json")
    cam = next(c for info in infos for c in info["cams"].values())
    Image.new("RGB", (cam["width"], cam["height"]), (90, 90, 90)).save(world / cam["path"])
    config = str(ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml")
    torch.save({"model": bev_ddp.init_model(config).state_dict()}, tmp_path / "m.pth")
    out = tmp_path / "report"
    assert main(["eval", config, str(tmp_path / "m.pth"), f"data.dataroot={world}", "--steps", "1", "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    degraded = metrics["degraded"]
    assert degraded["samples_missing_cameras"] == metrics["num_samples"]
    assert degraded["missing_camera_images"] == 6 * metrics["num_samples"] - 1
    assert "**Degraded input:**" in (out / "report.md").read_text()


def test_a_pointcloud2_intensity_of_3e38_names_the_message_and_the_field():
    from bev_ddp.replay import export, ros_messages

    points = np.zeros((5, 4), np.float32)
    points[2, 3] = 3e38
    msg = export.pointcloud2(points, 1_000_000_000, "LIDAR_TOP")
    with pytest.raises(InputError, match=r"^/LIDAR_TOP @ 1 ns holds 1 point\(s\) whose intensity is NaN, inf or beyond"):
        ros_messages.pointcloud2_to_points(msg, name="/LIDAR_TOP @ 1 ns")
