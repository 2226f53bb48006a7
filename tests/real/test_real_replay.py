"""The real nuScenes keyframe recorded as a ROS 2 MCAP and as a Foxglove-protobuf MCAP, replayed.

The recordings are written by the replay tests' own exporters (``bev_ddp.replay.export`` and
``export_foxglove``) from a one-keyframe source built out of the imported info record; the replay
prediction must equal the dataset path's (``NuScenesBEVDataset`` on the same info) up to the
JPEG decoder, with the same model and seed.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from real_frames import keyframe_dataroot

from bev_ddp.bev.model import DegradedInputWarning
from bev_ddp.bev.schema import BEVConfig
from bev_ddp.config import load_config
from bev_ddp.data.geometry import matrix_to_quaternion
from bev_ddp.data.infos import read_infos
from bev_ddp.data.nuscenes import NuScenesBEVDataset
from bev_ddp.data.sensors import CAMERA_NAMES, LIDAR_NAME
from bev_ddp.data.structures import collate_samples
from bev_ddp.engine.task import get_task
from bev_ddp.replay import export
from bev_ddp.replay.app import ReplayRequest, run_replay
from bev_ddp.data.sample_builder import SampleBuilder
from bev_ddp.replay.export_foxglove import scene_messages_foxglove, write_foxglove_mcap
from bev_ddp.replay.topics import default_topic_map

pytestmark = pytest.mark.slow  # ~40 s together on a 2-core machine (model, six full-size JPEGs, two replays)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"


class _Tables:
    """The few nuScenes table records the exporters read (``get(table, token)``)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict] = {}

    def add(self, table: str, token: str, matrix: np.ndarray, **extra) -> str:
        self.rows[(table, token)] = {"token": token, "translation": matrix[:3, 3].tolist(),
                                     "rotation": matrix_to_quaternion(matrix[:3, :3]), **extra}
        return token

    def get(self, table: str, token: str) -> dict:
        return self.rows[(table, token)]


def _keyframe_source(root: Path, info: dict) -> SimpleNamespace:
    """A one-keyframe scene source (what ``export.scene_messages`` reads) from our info record."""
    tables = _Tables()
    lidar = {"token": "sd-lidar", "timestamp": info["timestamp"], "filename": info["lidar_path"], "is_key_frame": True,
             "sample_token": info["token"], "height": 0, "width": 0,
             "calibrated_sensor_token": tables.add("calibrated_sensor", "cs-lidar", np.asarray(info["lidar2ego"])),
             "ego_pose_token": tables.add("ego_pose", "ep-lidar", np.asarray(info["ego2global"]),
                                          timestamp=info["timestamp"])}
    channels = {LIDAR_NAME: [lidar]}
    for name in CAMERA_NAMES:
        cam = info["cams"][name]
        channels[name] = [{
            "token": f"sd-{name}", "timestamp": cam["timestamp"], "filename": cam["path"], "is_key_frame": True,
            "sample_token": info["token"], "height": cam["height"], "width": cam["width"],
            "calibrated_sensor_token": tables.add("calibrated_sensor", f"cs-{name}", np.asarray(cam["camera2ego"]),
                                                  camera_intrinsic=cam["intrinsics"]),
            "ego_pose_token": tables.add("ego_pose", f"ep-{name}", np.asarray(cam["ego2global"]),
                                         timestamp=cam["timestamp"]),
        }]
    return SimpleNamespace(nusc=tables, dataroot=root, records=SimpleNamespace(channels=channels))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root, info_path = keyframe_dataroot(tmp_path_factory.mktemp("real_replay"))
    cfg = load_config(CONFIG, schema=BEVConfig)
    torch.manual_seed(0)
    model = get_task("bev").build_model(cfg).eval()
    dataset = NuScenesBEVDataset(info_path, root, image_size=tuple(cfg.data.image_size),
                                 load_sweeps=int(cfg.data.load_sweeps), with_labels=False)
    sample = dataset[0]
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DegradedInputWarning)
        direct = model.predict(collate_samples([sample]), steps=[1], seed=0)[1]
    source = _keyframe_source(root, read_infos(info_path)[1][0])
    return cfg, model, source, sample, direct


def _replay_and_compare(setup, recording: Path, out: Path) -> None:
    cfg, model, _, sample, direct = setup
    seen = {}
    request = ReplayRequest(config=CONFIG, bag=recording, out=out, steps=1, progress=False)
    result = run_replay(request, model=model, on_frame=lambda f, r, p: seen.__setitem__(f.index, (f, p)))
    assert (result.frames, result.predicted, result.skipped) == (1, 1, 0)
    frame, prediction = seen[0]
    assert not frame.flags and all(image is not None for image in frame.images.values())  # all six cameras in sync
    # the replay's model input equals the dataset's: the same pixels (one JPEG decoder), geometry, points
    replayed = SampleBuilder.from_config(cfg)(frame)
    assert (replayed["img"] - sample["img"]).abs().max() < 1e-5
    for key in ("intrinsics", "camera2lidar", "img_aug", "lidar_aug", "lidar2ego"):
        torch.testing.assert_close(getattr(replayed["geometry"], key), getattr(sample["geometry"], key),
                                   rtol=0, atol=1e-5, msg=key)
    torch.testing.assert_close(replayed["points"][:, :4], sample["points"][:, :4], rtol=0, atol=1e-5)
    torch.testing.assert_close(prediction.probs, direct.probs, rtol=0, atol=1e-4)


def test_ros2_mcap_of_the_real_keyframe_replays_to_the_dataset_prediction(setup, tmp_path):
    recording = export.write_mcap(export.scene_messages(setup[2], default_topic_map()), tmp_path / "keyframe.mcap")
    _replay_and_compare(setup, recording, tmp_path / "out")


def test_foxglove_mcap_of_the_real_keyframe_replays_to_the_dataset_prediction(setup, tmp_path):
    recording = write_foxglove_mcap(scene_messages_foxglove(setup[2]), tmp_path / "keyframe_foxglove.mcap")
    _replay_and_compare(setup, recording, tmp_path / "out")
