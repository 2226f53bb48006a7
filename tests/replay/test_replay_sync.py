"""Bag reading and frame assembly: round trips through real bag files, timing, ego motion, faults."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from bev_ddp.data.sensors import CAMERA_NAMES, CAMERA_RIG, LidarSpec
from bev_ddp.errors import InputError
from bev_ddp.replay import export
from bev_ddp.replay.bag_source import RosbagSource
from bev_ddp.replay.sync import FrameAssembler, SyncSettings
from bev_ddp.replay.topics import default_topic_map
from replay_helpers import PERIOD, cloud, ego_pose, rig_recording

TOPICS = default_topic_map()


def _frames(path: Path, **settings):
    assembler = FrameAssembler(settings=SyncSettings(**settings))
    frames = list(assembler.frames(RosbagSource(path, topics=TOPICS).events()))
    return frames, assembler


def _write(tmp_path: Path, messages, kind: str) -> Path:
    if kind == "mcap":  # a plain MCAP file, small chunks so a truncated copy keeps some
        return export.write_mcap(messages, tmp_path / f"log{len(list(tmp_path.iterdir()))}.mcap", chunk_size=16_000)
    return export.write_rosbag2(messages, tmp_path / f"bag_{kind}{len(list(tmp_path.iterdir()))}", storage=kind)


def test_every_storage_gives_the_same_frames(tmp_path):
    messages = rig_recording(TOPICS, frames=3)
    paths = [
        export.write_rosbag2(messages, tmp_path / "sqlite3_bag", storage="sqlite3"),
        export.write_rosbag2(messages, tmp_path / "mcap_storage_bag", storage="mcap"),
        export.write_mcap(messages, tmp_path / "plain.mcap"),
    ]
    results = [_frames(path)[0] for path in paths]
    first = results[0]
    assert [f.index for f in first] == [0, 1, 2]
    for other in results[1:]:
        for a, b in zip(first, other, strict=True):
            np.testing.assert_array_equal(a.points, b.points)
            assert a.flags == b.flags == []
            for name in CAMERA_NAMES:
                np.testing.assert_array_equal(a.images[name], b.images[name])
                np.testing.assert_array_equal(a.camera2lidar[name], b.camera2lidar[name])


def test_cameras_recorded_after_the_lidar_are_matched_and_geometry_follows_ego_motion(tmp_path):
    offset = 5_000_000
    frames, _ = _frames(_write(tmp_path, rig_recording(TOPICS, frames=3, camera_offset_ns=offset,
                                                      camera_delay_ns=30_000_000), "sqlite3"), num_sweeps=2)
    lidar2ego = LidarSpec().lidar2ego()
    frame = frames[1]
    assert frame.flags == [] and all(frame.camera_valid.values())
    assert frame.image_stamps_ns["CAM_FRONT"] == frame.stamp_ns + offset
    np.testing.assert_allclose(frame.lidar2ego, lidar2ego, atol=1e-9)
    # camera pose at the image stamp, LiDAR pose at the sweep stamp (the car moved in between)
    for name in CAMERA_NAMES:
        expected = (np.linalg.inv(lidar2ego) @ np.linalg.inv(ego_pose(1)) @ ego_pose(1 + offset / PERIOD)
                    @ CAMERA_RIG[name].camera2ego())
        np.testing.assert_allclose(frame.camera2lidar[name], expected, atol=1e-6)
    # the previous sweep is moved into the current LiDAR frame and carries its time lag
    previous = cloud(0)
    previous = previous[np.hypot(previous[:, 0], previous[:, 1]) >= 1.0]
    motion = np.linalg.inv(lidar2ego) @ np.linalg.inv(ego_pose(1)) @ ego_pose(0) @ lidar2ego
    current = cloud(1)
    assert frame.sweeps_used == 2 and frame.points.shape == (len(current) + len(previous), 5)
    np.testing.assert_array_equal(frame.points[: len(current), :4], current)
    np.testing.assert_allclose(frame.points[len(current):, :3], previous[:, :3] @ motion[:3, :3].T + motion[:3, 3],
                               atol=1e-4)
    np.testing.assert_allclose(frame.points[len(current):, 4], PERIOD * 1e-9)
    assert np.all(frame.points[: len(current), 4] == 0)


def test_a_recording_clock_far_from_the_sensor_clock_still_waits_for_late_images(tmp_path):
    messages = rig_recording(TOPICS, frames=3, camera_delay_ns=400_000_000)  # images recorded 0.4 s late
    for m in messages:
        m.log_ns += 3_600_000_000_000  # the log's clock runs an hour ahead of the sensor stamps
    frames, _ = _frames(_write(tmp_path, messages, "mcap"), arrival_slack_ns=500_000_000)
    assert [f.flags for f in frames] == [[], [], []]


def test_late_or_missing_cameras_degrade_the_frame_but_never_drop_it(tmp_path):
    bag = _write(tmp_path, rig_recording(TOPICS, frames=3, camera_offset_ns=60_000_000, skip_camera=("CAM_BACK", 0)),
                 "sqlite3")
    frames, _ = _frames(bag, tolerance_ns=50_000_000)
    assert len(frames) == 3
    # 60 ms after its own sweep, each image is only 10 ms before the next sweep: matched to that one
    assert frames[0].flags == [f"camera_missing:{n}" for n in CAMERA_NAMES]
    assert frames[1].flags == ["camera_missing:CAM_BACK"] and not frames[1].camera_valid["CAM_BACK"]
    assert frames[1].meta["camera_offsets_ms"]["CAM_FRONT"] == pytest.approx(10.0)
    strict, _ = _frames(bag, tolerance_ns=5_000_000)
    assert all(f.flags == [f"camera_missing:{n}" for n in CAMERA_NAMES] for f in strict)
    assert all(not any(f.camera_valid.values()) and f.points is not None for f in strict)


def test_missing_tf_flags_every_frame(tmp_path):
    frames, _ = _frames(_write(tmp_path, rig_recording(TOPICS, frames=2, with_tf=False), "sqlite3"))
    for frame in frames:
        assert "lidar_no_base_tf" in frame.flags
        assert all(f"camera_no_tf:{n}" in frame.flags for n in CAMERA_NAMES)
        assert not any(frame.camera_valid.values())
    assert "ego_motion_unknown" in frames[1].flags and frames[1].sweeps_used == 2  # accumulated, assumed static
    frames, _ = _frames(_write(tmp_path, rig_recording(TOPICS, frames=2, with_world_tf=False), "mcap"))
    assert frames[1].flags == ["ego_motion_unknown"] and all(frames[1].camera_valid.values())


def test_corrupt_payloads_are_flagged(tmp_path):
    store = get_typestore(Stores.ROS2_HUMBLE)
    messages = rig_recording(TOPICS, frames=3)
    path = tmp_path / "corrupt"
    lidar_seen = camera_seen = 0
    with Writer(path, version=9) as writer:
        connections = {}
        for m in messages:
            raw = bytes(store.serialize_cdr(m.message, m.msgtype))
            if m.topic == TOPICS.lidar_topic:
                lidar_seen += 1
                if lidar_seen == 2:
                    raw = raw[:40]  # cut inside the field list
            if m.topic == "/CAM_FRONT/image_rect_compressed":
                camera_seen += 1
                if camera_seen == 3:
                    raw = raw[:24] + b"\xff" * (len(raw) - 24)  # valid CDR, garbage JPEG
            if m.topic not in connections:
                connections[m.topic] = writer.add_connection(m.topic, m.msgtype, typestore=store)
            writer.write(connections[m.topic], m.log_ns, raw)
    frames, _ = _frames(path)
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].flags == []
    assert frames[1].flags[0] == "lidar_corrupt" and frames[1].points is None
    assert "camera_corrupt:CAM_FRONT" in frames[2].flags and frames[2].images["CAM_FRONT"] is None
    assert frames[2].points is not None and frames[2].sweeps_used == 2  # the corrupt sweep is not accumulated


def test_truncated_mcap_yields_the_readable_frames_then_a_log_error(tmp_path):
    path = _write(tmp_path, rig_recording(TOPICS, frames=6), "mcap")
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    frames, assembler = _frames(cut)
    assert 1 <= len(frames) < 6
    assert [f.index for f in frames] == list(range(len(frames)))
    assert assembler.log_error is not None and "cut.mcap" in assembler.log_error
    full, _ = _frames(path)
    np.testing.assert_array_equal(frames[0].points, full[0].points)


def test_unreadable_bags_raise_input_errors_naming_them(tmp_path):
    bag = _write(tmp_path, rig_recording(TOPICS, frames=2), "sqlite3")
    db = next(bag.glob("*.db3"))
    db.write_bytes(db.read_bytes()[:5000])
    with pytest.raises(InputError, match=bag.name):
        list(RosbagSource(bag, topics=TOPICS).events())
    with pytest.raises(InputError, match="not found"):
        RosbagSource(tmp_path / "nope.mcap", topics=TOPICS)
    other = _write(tmp_path, rig_recording(TOPICS, frames=1), "mcap")
    source = RosbagSource(other, topics=dataclasses.replace(TOPICS, lidar_topic="/velodyne"))
    with pytest.raises(InputError, match="/velodyne"):
        list(source.events())
