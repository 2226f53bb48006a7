"""Replay inputs checked before the first frame, each with one line naming the input: damaged or
truncated MCAP files, a FIFO given as --bag, topics of the wrong message type, and directory bags
whose metadata.yaml QoS profiles differ from those stored in their files (read anyway)."""
from __future__ import annotations

import os
import re
import shutil
import threading

import pytest
from fault_helpers import REPLAY_CONFIG, one_line

from bev_ddp.errors import InputError

FRAMES = 3


@pytest.fixture(scope="module")
def recording():
    from replay_helpers import rig_recording

    from bev_ddp.replay.topics import default_topic_map

    return rig_recording(default_topic_map(), frames=FRAMES)


@pytest.fixture(scope="module")
def mcap_file(recording, tmp_path_factory):
    from bev_ddp.replay import export

    return export.write_mcap(recording, tmp_path_factory.mktemp("mcap") / "drive.mcap")


def _lidar_frames(source) -> int:
    from bev_ddp.replay.events import LidarMessage

    return sum(isinstance(event, LidarMessage) for event in source.events())


def _open(path, **kwargs):
    from bev_ddp.replay.log_sources import open_log

    return open_log(path, **kwargs)


def _replay(bag, tmp_path, capsys):
    from bev_ddp.cli import main

    code = main(["replay", str(REPLAY_CONFIG), "--bag", str(bag), "--out", str(tmp_path / "out"), "--no-progress"])
    return code, one_line(capsys.readouterr().err, "bev-ddp replay: error:")


# ------------------------------------------------------------------------------ damaged files
@pytest.mark.parametrize("size", [13, 20, 100])
def test_a_short_prefix_of_an_mcap_is_one_line_not_a_struct_error(mcap_file, tmp_path, capsys, size):
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(mcap_file.read_bytes()[:size])
    code, line = _replay(cut, tmp_path, capsys)
    assert code == 2 and str(cut) in line
    assert re.search("truncated|corrupt", line)


def test_an_mcap_cut_inside_its_first_chunk_is_named_as_truncated(mcap_file, tmp_path):
    data = mcap_file.read_bytes()
    cut = tmp_path / "half.mcap"
    cut.write_bytes(data[: len(data) // 2])  # one chunk holds the whole recording: no channel survives
    with pytest.raises(InputError, match=rf"^bag {cut} is truncated or corrupt before its first channel record"):
        _open(cut)


def test_a_fifo_as_bag_is_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "drive.mcap"
    os.mkfifo(fifo)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(code=_replay(fifo, tmp_path, capsys)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "wb"):
            pass
        pytest.fail("replay blocked on a FIFO")
    code, line = result["code"]
    assert code == 2 and f"bag {fifo} is not a regular file or a bag folder" in line


# ------------------------------------------------------------------------------ topics and types
def _retyped(recording, topic: str):
    """The recording with ``topic`` carrying std_msgs/String instead of its sensor's type."""
    from dataclasses import replace

    from rosbags.typesys import Stores, get_typestore

    string = get_typestore(Stores.ROS2_HUMBLE).types["std_msgs/msg/String"](data="x")
    return [replace(m, msgtype="std_msgs/msg/String", message=string) if m.topic == topic else m for m in recording]


@pytest.mark.parametrize("storage", ["mcap-file", "sqlite3-folder", "mcap-folder"])
def test_a_lidar_topic_of_the_wrong_type_is_refused_before_the_first_frame(recording, tmp_path, storage):
    from bev_ddp.replay import export
    from bev_ddp.replay.topics import default_topic_map

    lidar = default_topic_map().lidar_topic
    messages = _retyped(recording, lidar)
    if storage == "mcap-file":
        bag = export.write_mcap(messages, tmp_path / "strings.mcap")
    else:
        bag = export.write_rosbag2(messages, tmp_path / "bag", storage=storage.split("-")[0])
    source = _open(bag, topics_file=None)
    with pytest.raises(InputError, match=rf"topic {re.escape(lidar)} \(lidar\) carries std_msgs/msg/String, "
                                         r"expected sensor_msgs/msg/PointCloud2"):
        source.count_lidar_messages()
    with pytest.raises(InputError, match="carries std_msgs/msg/String"):
        _lidar_frames(source)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_folder_bag_whose_metadata_qos_differs_from_its_file_is_read(recording, tmp_path, storage):
    from bev_ddp.replay import export
    from bev_ddp.replay.bag_source import RosbagSource
    from bev_ddp.replay.topics import default_topic_map

    bag = export.write_rosbag2(recording, tmp_path / "bag", storage=storage)
    meta = bag / "metadata.yaml"
    qos = ("offered_qos_profiles:\n      - {history: keep_last, depth: 10, reliability: reliable, "
           "durability: volatile, liveliness: automatic, deadline: {sec: 0, nsec: 0}, lifespan: {sec: 0, nsec: 0}, "
           "liveliness_lease_duration: {sec: 0, nsec: 0}, avoid_ros_namespace_conventions: false}")
    text = meta.read_text()
    assert "offered_qos_profiles: []" in text
    meta.write_text(text.replace("offered_qos_profiles: []", qos))  # as a re-indexing tool writes it
    assert _lidar_frames(RosbagSource(bag, topics=default_topic_map())) == FRAMES
    shutil.rmtree(bag)


# ------------------------------------------------------------------------------ degraded frames
def _odd_recording():
    """Four rig frames: frame 1's cloud has zero points, frame 3 is stamped 0.1 s before frame 2 (as frame 0)."""
    from dataclasses import replace

    import numpy as np
    from replay_helpers import cloud, rig_recording

    from bev_ddp.replay import export
    from bev_ddp.replay.topics import default_topic_map

    topics = default_topic_map()
    messages = rig_recording(topics, frames=4)
    lidar = [m for m in messages if m.topic == topics.lidar_topic]
    empty = export.pointcloud2(np.zeros((0, 4), np.float32), lidar[1].log_ns, "LIDAR_TOP")
    back = export.pointcloud2(cloud(3), lidar[2].log_ns - 100_000_000, "LIDAR_TOP")
    swap = {id(lidar[1]): replace(lidar[1], message=empty), id(lidar[3]): replace(lidar[3], message=back)}
    return [swap.get(id(m), m) for m in messages]


def test_zero_point_clouds_and_stamps_going_back_are_flagged_per_frame(tmp_path):
    from bev_ddp.replay import export
    from bev_ddp.replay.bag_source import RosbagSource
    from bev_ddp.replay.sync import FrameAssembler, SyncSettings
    from bev_ddp.replay.topics import default_topic_map

    bag = export.write_mcap(_odd_recording(), tmp_path / "odd.mcap")
    frames = list(FrameAssembler(settings=SyncSettings(num_sweeps=1)).frames(
        RosbagSource(bag, topics=default_topic_map()).events()))
    flags = {f.index: f.flags for f in frames}
    assert len(frames) == 4
    assert "lidar_empty" in flags[1] and "lidar_empty" not in flags[0] + flags[2] + flags[3]
    assert "lidar_stamp_not_increasing" in flags[3]
    assert not any("lidar_stamp_not_increasing" in flags[i] for i in (0, 1, 2))


@pytest.mark.slow
def test_replay_counts_the_flags_in_its_summary(tmp_path):
    import json

    from bev_ddp.cli import main
    from bev_ddp.replay import export

    bag = export.write_mcap(_odd_recording(), tmp_path / "odd.mcap")
    out = tmp_path / "out"
    assert main(["replay", str(REPLAY_CONFIG), "--bag", str(bag), "--out", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4
    assert summary["flag_counts"]["lidar_empty"] == 1 and summary["flag_counts"]["lidar_stamp_not_increasing"] == 1
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert "lidar_empty" in records[1]["flags"]


def test_a_lidar_stamp_before_1970_marks_the_frame_corrupt_not_the_output_writer(tmp_path):
    from dataclasses import replace

    from replay_helpers import cloud, rig_recording

    from bev_ddp.replay import export
    from bev_ddp.replay.bag_source import RosbagSource
    from bev_ddp.replay.sync import FrameAssembler, SyncSettings
    from bev_ddp.replay.topics import default_topic_map

    topics = default_topic_map()
    messages = rig_recording(topics, frames=3)
    lidar = [m for m in messages if m.topic == topics.lidar_topic]
    early = replace(lidar[1], message=export.pointcloud2(cloud(1), -2_000_000_000, "LIDAR_TOP"))
    bag = export.write_mcap([early if m is lidar[1] else m for m in messages], tmp_path / "early.mcap")
    frames = list(FrameAssembler(settings=SyncSettings(num_sweeps=1)).frames(
        RosbagSource(bag, topics=topics).events()))
    assert [f.index for f in frames] == [0, 1, 2] and all(f.stamp_ns >= 0 for f in frames)
    assert "lidar_corrupt" in frames[1].flags and frames[1].points is None
    assert "before 1970" in " ".join(frames[1].meta["errors"])
