"""Replay of the synthetic world through the tiny fusion model: bags, MCAP, nuScenes scene, faults, CLI."""
from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from bev_ddp import cli
from bev_ddp.bev.model import DegradedInputWarning
from bev_ddp.data.nuscenes import NuScenesBEVDataset
from bev_ddp.data.sample_builder import SampleBuilder
from bev_ddp.data.structures import collate_samples
from bev_ddp.replay import export, foxglove
from bev_ddp.replay.app import ReplayRequest, run_replay
from bev_ddp.replay.bag_source import RosbagSource
from bev_ddp.replay.nuscenes_source import NuScenesSceneSource
from bev_ddp.replay.outputs import ReplayOutputs, quantise
from bev_ddp.replay.sync import FrameAssembler, SyncSettings
from bev_ddp.replay.topics import default_topic_map
from bev_ddp.data.create_infos import create_infos
from test_replay_outputs import read_mcap

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"
SCENE = "synth-0000"
FRAMES = 10  # one keyframe per scene: 9 sweeps + the keyframe at 20 Hz
TOPICS = default_topic_map()


@pytest.fixture(scope="module")
def scene_source(world) -> NuScenesSceneSource:
    return NuScenesSceneSource(world, SCENE)


@pytest.fixture(scope="module")
def logs(scene_source, tmp_path_factory) -> dict[str, Path]:
    """The scene as a sqlite3 rosbag2 (rosbags writer) and a plain MCAP file (mcap_ros2 writer)."""
    folder = tmp_path_factory.mktemp("replay_logs")
    messages = export.scene_messages(scene_source, TOPICS)
    return {
        "sqlite3": export.write_rosbag2(messages, folder / "scene_bag", storage="sqlite3"),
        "mcap": export.write_mcap(messages, folder / "scene.mcap", chunk_size=64_000),
    }


def _request(tmp_path: Path, **kw) -> ReplayRequest:
    return ReplayRequest(config=CONFIG, out=tmp_path / "out", progress=False, **kw)


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def _direct(model, cfg, frame, steps: int):
    batch = collate_samples([SampleBuilder.from_config(cfg)(frame)])
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DegradedInputWarning)  # LiDAR-only frames are expected here
        return model.predict(batch, steps=[steps], seed=0)[steps]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite3", "mcap"])
def test_log_replay_writes_one_record_per_lidar_frame_equal_to_the_model_run_directly(
        kind, logs, model, cfg, tmp_path):
    seen = {}
    result = run_replay(_request(tmp_path, bag=logs[kind], steps=2), model=model,
                        on_frame=lambda frame, record, pred: seen.__setitem__(frame.index, (frame, pred)))
    out = tmp_path / "out"
    assert (result.frames, result.predicted, result.skipped, result.interrupted) == (FRAMES, FRAMES, 0, False)
    records = _jsonl(out)
    assert [r["index"] for r in records] == list(range(FRAMES))
    assert all(r["steps"] == 2 and r["latency_ms"] > 0 for r in records)
    # cameras exist at the keyframe only (the frame before it is 50 ms away: within tolerance)
    assert records[-1]["flags"] == [] and all(records[-1]["camera_valid"].values())
    assert all("camera_missing:CAM_FRONT" in r["flags"] for r in records[:8])
    topics = read_mcap(out / "replay.mcap")
    assert [m["index"] for _, _, m in topics["/bev/frame"]] == list(range(FRAMES))
    assert len(topics["/bev/probabilities"]) == len(topics["/bev/uncertainty"]) == len(topics["/bev/argmax"]) == FRAMES
    for index in (0, FRAMES - 1):  # a degraded LiDAR-only frame and the full keyframe
        frame, pred = seen[index]
        direct = _direct(model, cfg, frame, steps=2)
        assert torch.equal(pred.probs, direct.probs) and torch.equal(pred.uncertainty, direct.uncertainty)
        grid = foxglove.grid_values(topics["/bev/probabilities"][index][2])
        np.testing.assert_array_equal(grid["divider"], quantise(direct.probs[0, 5].numpy()))


@pytest.mark.slow
def test_bag_frames_equal_scene_frames_and_the_keyframe_equals_the_dataset_sample(world, scene_source, logs, cfg):
    settings = SyncSettings(num_sweeps=int(cfg.data.load_sweeps))
    build = SampleBuilder.from_config(cfg)
    from_scene = list(FrameAssembler(settings=settings).frames(scene_source.events()))
    from_bag = list(FrameAssembler(settings=settings).frames(RosbagSource(logs["sqlite3"], topics=TOPICS).events()))
    assert len(from_scene) == len(from_bag) == FRAMES
    for a, b in zip(from_scene, from_bag):
        assert a.flags == b.flags
        sa, sb = build(a), build(b)
        assert torch.equal(sa["img"], sb["img"]) and torch.equal(sa["camera_valid"], sb["camera_valid"])
        torch.testing.assert_close(sa["points"], sb["points"], rtol=0, atol=1e-4)
        torch.testing.assert_close(sa["geometry"].camera2lidar, sb["geometry"].camera2lidar, rtol=0, atol=1e-5)
    key = from_scene[-1]
    paths = create_infos(world, "v1.0-mini", world / "infos")
    for path in paths.values():
        dataset = NuScenesBEVDataset(path, world, image_size=tuple(cfg.data.image_size),
                                     load_sweeps=int(cfg.data.load_sweeps), with_labels=False)
        for i, info in enumerate(dataset.infos):
            if info["token"] == key.meta["token"]:
                expected, got = dataset[i], build(key)
    assert torch.equal(got["img"], expected["img"]) and torch.equal(got["camera_valid"], expected["camera_valid"])
    torch.testing.assert_close(got["points"], expected["points"], rtol=0, atol=1e-5)
    for name in ("intrinsics", "camera2lidar", "img_aug", "lidar_aug", "camera2ego", "lidar2ego"):
        torch.testing.assert_close(getattr(got["geometry"], name), getattr(expected["geometry"], name),
                                   rtol=0, atol=1e-5)


@pytest.mark.slow
def test_nuscenes_scene_replay_with_a_latency_budget(world, model, tmp_path):
    result = run_replay(_request(tmp_path, scene=SCENE, dataroot=world, steps=3, latency_budget_ms=1e6,
                                 max_frames=4), model=model)
    steps = [r["steps"] for r in _jsonl(tmp_path / "out")]
    assert result.frames == 4 and steps[0] == 1 and steps[1:] == [3, 3, 3]  # cheapest first, then what fits
    result = run_replay(_request(tmp_path, scene=SCENE, dataroot=world, steps=3, latency_budget_ms=1e-3,
                                 max_frames=3), model=model)
    records = _jsonl(tmp_path / "out")
    assert [r["steps"] for r in records] == [1, 1, 1] and all("over_budget" in r["flags"] for r in records)


def _corrupt_bag(messages, path: Path, *, bad_lidar: int) -> Path:
    store = get_typestore(Stores.ROS2_HUMBLE)
    lidar_index = 0
    with Writer(path, version=9) as writer:
        connections = {}
        for m in messages:
            raw = bytes(store.serialize_cdr(m.message, m.msgtype))
            if m.topic == TOPICS.lidar_topic:
                if lidar_index == bad_lidar:
                    raw = raw[:32] + b"\x7f" * 8 + raw[40:]  # overwrite the header / field list
                lidar_index += 1
            if m.topic not in connections:
                connections[m.topic] = writer.add_connection(m.topic, m.msgtype, typestore=store)
            writer.write(connections[m.topic], m.log_ns, raw)
    return path


@pytest.mark.slow
def test_faults_are_flagged_and_the_output_stays_readable(scene_source, model, tmp_path):
    # corrupt LiDAR payload + no /tf at all: every frame still has its record
    messages = export.scene_messages(scene_source, TOPICS, with_tf=False)
    bag = _corrupt_bag(messages, tmp_path / "corrupt_bag", bad_lidar=3)
    result = run_replay(_request(tmp_path, bag=bag), model=model)
    records = _jsonl(tmp_path / "out")
    assert [r["index"] for r in records] == list(range(FRAMES)) and result.skipped == 1
    assert records[3]["flags"][0] == "lidar_corrupt" and "skipped" in records[3]["flags"]
    assert records[3]["latency_ms"] is None
    assert all("lidar_no_base_tf" in r["flags"] for r in records)
    assert "camera_no_tf:CAM_FRONT" in records[-1]["flags"] and not any(records[-1]["camera_valid"].values())
    assert len(read_mcap(tmp_path / "out" / "replay.mcap")["/bev/probabilities"]) == FRAMES - 1

    # a truncated MCAP: the readable frames are replayed, the error is reported, the output is valid
    full = export.write_mcap(export.scene_messages(scene_source, TOPICS), tmp_path / "full.mcap", chunk_size=64_000)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    result = run_replay(_request(tmp_path, bag=cut), model=model)
    assert result.log_error and "cut.mcap" in result.log_error and 0 < result.frames < FRAMES
    assert len(read_mcap(tmp_path / "out" / "replay.mcap")["/bev/frame"]) == result.frames
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["log_error"] == result.log_error


@pytest.mark.slow
def test_ctrl_c_leaves_a_closed_mcap_with_the_frames_so_far(logs, model, tmp_path):
    def interrupt(frame, record, prediction):
        if frame.index == 2:
            raise KeyboardInterrupt

    result = run_replay(_request(tmp_path, bag=logs["mcap"]), model=model, on_frame=interrupt)
    assert result.interrupted and result.frames == 3
    assert [m["index"] for _, _, m in read_mcap(tmp_path / "out" / "replay.mcap")["/bev/frame"]] == [0, 1, 2]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["interrupted"] is True


@pytest.mark.slow
def test_ctrl_c_while_writing_finishes_the_frame_being_written(logs, model, tmp_path, monkeypatch):
    original = ReplayOutputs.write

    def write_and_get_interrupted(self, record, *args, **kwargs):
        if record.index == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives in the middle of writing frame 1
        original(self, record, *args, **kwargs)

    monkeypatch.setattr(ReplayOutputs, "write", write_and_get_interrupted)
    result = run_replay(_request(tmp_path, bag=logs["mcap"]), model=model)
    assert result.interrupted and result.frames == 2  # frame 1 is finished, then the run stops
    topics = read_mcap(tmp_path / "out" / "replay.mcap")
    assert [m["index"] for _, _, m in topics["/bev/frame"]] == [0, 1] and len(topics["/bev/probabilities"]) == 2


@pytest.mark.slow
def test_command_line_loads_the_checkpoint_and_reports_bad_input(logs, model, cfg, tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    out = tmp_path / "cli_out"
    rc = cli.main(["replay", str(CONFIG), str(checkpoint), "--bag", str(logs["mcap"]), "--out", str(out),
                   "--steps", "2", "--max-frames", "2", "--no-progress", "--png"])
    assert rc == 0 and "replayed 2 frames" in capsys.readouterr().out
    assert len(_jsonl(out)) == 2 and sorted(p.name for p in (out / "frames").iterdir()) == ["000000.png", "000001.png"]
    frame = next(FrameAssembler(settings=SyncSettings(num_sweeps=int(cfg.data.load_sweeps))).frames(
        RosbagSource(logs["mcap"], topics=TOPICS).events()))
    grid = foxglove.grid_values(read_mcap(out / "replay.mcap")["/bev/probabilities"][0][2])
    np.testing.assert_array_equal(grid["drivable_area"], quantise(_direct(model, cfg, frame, 2).probs[0, 0].numpy()))
    rc = cli.main(["replay", str(CONFIG), str(checkpoint), "--bag", str(tmp_path / "missing.mcap"), "--no-progress"])
    assert rc == 2 and "missing.mcap" in capsys.readouterr().err


def test_scene_with_camera_sweeps_replays_every_frame_with_all_cameras(tmp_path, model):
    from bev_ddp.data.synthetic import generate_world

    world = generate_world(tmp_path / "world", num_scenes=1, samples_per_scene=1, image_size=(96, 176),
                           lidar_azimuth_steps=360, camera_every=2)
    result = run_replay(_request(tmp_path, scene=SCENE, dataroot=world, steps=1), model=model)
    records = _jsonl(tmp_path / "out")
    assert result.frames == FRAMES and len(records) == FRAMES
    # cameras at 10 Hz: every 20 Hz LiDAR frame has all six images within the 50 ms tolerance
    assert not [f for r in records for f in r["flags"] if f.startswith("camera_missing")]
