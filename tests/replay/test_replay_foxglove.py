"""Foxglove protobuf MCAPs in foxglove/nuscenes2mcap's layout: layout detection, decoding, replay
parity with the dataset path, errors that name their cause, and the output's ``/tf``."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
from foxglove_schemas_protobuf.Pose_pb2 import Pose
from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
from mcap.writer import Writer as McapWriter

from bev_ddp import cli
from bev_ddp.bev.model import DegradedInputWarning
from bev_ddp.data.nuscenes import NuScenesBEVDataset
from bev_ddp.data.structures import collate_samples
from bev_ddp.errors import InputError
from bev_ddp.replay import foxglove, foxglove_messages
from bev_ddp.replay.app import ReplayRequest, run_replay
from bev_ddp.replay.events import CorruptMessage, LidarMessage, TransformMessage
from bev_ddp.replay.export_foxglove import scene_messages_foxglove, write_foxglove_mcap
from bev_ddp.replay.foxglove_source import FoxgloveMcapSource
from bev_ddp.replay.log_sources import open_log
from bev_ddp.replay.mcap_layout import inspect_mcap
from bev_ddp.replay.nuscenes_source import NuScenesSceneSource
from bev_ddp.replay.outputs import quantise
from bev_ddp.replay.sync import FrameAssembler, SyncSettings
from bev_ddp.data.create_infos import create_infos
from test_replay_outputs import read_mcap

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"
SCENE = "synth-0000"
FRAMES = 10  # one keyframe: 9 sweeps + the keyframe at 20 Hz


@pytest.fixture(scope="module")
def scene_messages(world):
    return scene_messages_foxglove(NuScenesSceneSource(world, SCENE))


@pytest.fixture(scope="module")
def recording(scene_messages, tmp_path_factory) -> Path:
    return write_foxglove_mcap(scene_messages, tmp_path_factory.mktemp("fox_log") / "scene.mcap", chunk_size=64_000)


def test_the_recording_has_the_converter_layout_and_the_default_map_is_detected(recording):
    layout = inspect_mcap(recording)
    assert layout.profile == "" and layout.encodings == {"protobuf"} and layout.indexed
    schemas = {c.topic: c.schema_name for c in layout.channels}
    assert schemas["/lidar_top"] == "foxglove.PointCloud" and schemas["/tf"] == "foxglove.FrameTransform"
    assert schemas["/cam_back_left/image_rect_compressed"] == "foxglove.CompressedImage"
    assert schemas["/cam_front/camera_info"] == "foxglove.CameraCalibration" and "/tf_static" not in schemas
    source = open_log(recording)  # no topic map file
    assert isinstance(source, FoxgloveMcapSource) and source.count_lidar_messages() == FRAMES
    assert source.topics.lidar_topic == "/lidar_top"
    assert {c.frame_id for c in source.topics.cameras} == {"cam_front", "cam_front_right", "cam_front_left",
                                                           "cam_back", "cam_back_left", "cam_back_right"}


def _frames(source):
    cameras = {c.name: c.frame_id for c in source.topics.cameras}
    return list(FrameAssembler(settings=SyncSettings(num_sweeps=3), camera_frames=cameras).frames(source.events()))


def test_frames_equal_the_scene_source_frames(world, recording):
    scene = NuScenesSceneSource(world, SCENE)
    expected = list(FrameAssembler(settings=SyncSettings(num_sweeps=3)).frames(scene.events()))
    got = _frames(open_log(recording))
    assert len(got) == len(expected) == FRAMES
    for a, b in zip(expected, got):
        assert a.flags == b.flags and a.lidar_frame == "LIDAR_TOP" and b.lidar_frame == "lidar_top"
        np.testing.assert_allclose(a.points, b.points, rtol=0, atol=1e-4)  # sweeps moved with the ego motion
        np.testing.assert_allclose(a.lidar2ego, b.lidar2ego, rtol=0, atol=1e-6)
    key_a, key_b = expected[-1], got[-1]
    for name, image in key_a.images.items():
        assert np.array_equal(image, key_b.images[name])  # the same JPEG bytes, decoded the same way
        np.testing.assert_allclose(key_a.camera2lidar[name], key_b.camera2lidar[name], rtol=0, atol=1e-6)
        np.testing.assert_allclose(key_a.intrinsics[name], key_b.intrinsics[name])
    assert [p[:2] for p in key_b.placement] == [("map", "base_link"), ("base_link", "lidar_top")]


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_replay_gives_one_record_per_lidar_frame_and_the_dataset_prediction(world, recording, model, cfg, tmp_path,
                                                                            one_thread):
    seen = {}
    request = ReplayRequest(config=CONFIG, bag=recording, out=tmp_path / "out", steps=1, progress=False)
    result = run_replay(request, model=model, on_frame=lambda f, r, p: seen.__setitem__(f.index, (f, p)))
    assert (result.frames, result.predicted, result.skipped, result.log_error) == (FRAMES, FRAMES, 0, None)
    records = [json.loads(line) for line in (tmp_path / "out" / "frames.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(FRAMES)) and records[-1]["flags"] == []

    # the keyframe through the dataset (info files, NuScenesBEVDataset), the same model and seed
    key_frame, key_pred = seen[FRAMES - 1]
    paths = create_infos(world, "v1.0-mini", world / "infos_fox")
    sample = None
    for path in paths.values():
        dataset = NuScenesBEVDataset(path, world, image_size=tuple(cfg.data.image_size),
                                     load_sweeps=int(cfg.data.load_sweeps), with_labels=False)
        sample = next((dataset[i] for i, info in enumerate(dataset.infos) if info["timestamp"] * 1000 == key_frame.stamp_ns),
                      sample)
    assert sample is not None
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DegradedInputWarning)
        direct = model.predict(collate_samples([sample]), steps=[1], seed=0)[1]
    torch.testing.assert_close(key_pred.probs, direct.probs, rtol=0, atol=1e-4)
    topics = read_mcap(tmp_path / "out" / "replay.mcap")
    grid = foxglove.grid_values(topics["/bev/probabilities"][FRAMES - 1][2])
    assert np.abs(grid["drivable_area"].astype(int) - quantise(direct.probs[0, 0].numpy()).astype(int)).max() <= 1

    # the output places the grids: map -> base_link -> lidar_top at every frame's stamp
    tf = topics["/tf"]
    assert {(m.parent_frame_id, m.child_frame_id) for _, _, m in tf} == {("map", "base_link"), ("base_link", "lidar_top")}
    assert len(tf) == 2 * FRAMES and all(s == "foxglove.FrameTransform" for s, _, _ in tf)
    last = [m for _, t, m in tf if t == records[-1]["timestamp"]["sec"] * 10**9 + records[-1]["timestamp"]["nsec"]]
    mount = next(m for m in last if m.child_frame_id == "lidar_top")
    np.testing.assert_allclose(foxglove_messages.frame_transform_to_matrix(mount), key_frame.lidar2ego, atol=1e-6)
    assert topics["/bev/probabilities"][0][2]["frame_id"] == "lidar_top"


def _write_json_mcap(path: Path) -> Path:
    with open(path, "wb") as stream:
        writer = McapWriter(stream)
        writer.start(profile="x-custom", library="test")
        schema = writer.register_schema(name="Cloud", encoding="jsonschema", data=b"\x00\x01" * 2000)
        channel = writer.register_channel(topic="/lidar_top", message_encoding="json", schema_id=schema)
        writer.add_message(channel_id=channel, log_time=1, publish_time=1, data=b"{}")
        writer.finish()
    return path


def test_an_mcap_of_another_encoding_is_one_line_naming_profile_and_encodings(tmp_path, capsys):
    path = _write_json_mcap(tmp_path / "other.mcap")
    rc = cli.main(["replay", str(CONFIG), "--bag", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and len(err) < 400
    assert "'x-custom'" in err and "['json']" in err and "other.mcap" in err
    assert not (tmp_path / "out").exists()


def test_a_payload_that_does_not_parse_is_a_corrupt_message_not_storage_damage(scene_messages, tmp_path):
    bad = []
    lidar_seen = 0
    for topic, log_ns, message in scene_messages:
        if topic == "/lidar_top":
            lidar_seen += 1
            if lidar_seen == 4:
                message = PointCloud(timestamp=message.timestamp, frame_id="lidar_top", point_stride=20,
                                     fields=list(message.fields), data=message.data[:-3])  # not whole points
        bad.append((topic, log_ns, message))
    source = open_log(write_foxglove_mcap(bad, tmp_path / "bad.mcap"))
    events = list(source.events())
    corrupt = [e for e in events if isinstance(e, CorruptMessage)]
    assert len(corrupt) == 1 and corrupt[0].sensor == "lidar" and "whole number" in corrupt[0].error
    assembler = FrameAssembler(settings=SyncSettings(num_sweeps=1))
    frames = list(assembler.frames(iter(events)))
    assert len(frames) == FRAMES and assembler.log_error is None and frames[3].flags[0] == "lidar_corrupt"


def _two_channel_mcap(path: Path, *, profile: str, encoding: str, schemas: dict[str, tuple[str, bytes]],
                      finish: bool = True) -> Path:
    """An MCAP with one empty-ish message on each of ``schemas``' topics (topic → (schema name, schema data));
    ``finish=False`` leaves it without summary and footer, as a cut-off recording."""
    schema_encoding = {"protobuf": "protobuf", "cdr": "ros2msg"}[encoding]
    stream = open(path, "wb")
    writer = McapWriter(stream, use_chunking=False)
    writer.start(profile=profile, library="test")
    for time, (topic, (name, data)) in enumerate(schemas.items()):
        schema = writer.register_schema(name=name, encoding=schema_encoding, data=data)
        channel = writer.register_channel(topic=topic, message_encoding=encoding, schema_id=schema)
        writer.add_message(channel_id=channel, log_time=time + 1, publish_time=time + 1, data=b"\x00\x01\x00\x00")
    if finish:
        writer.finish()
    stream.close()
    return path


def test_a_schema_that_does_not_build_is_an_input_error_naming_the_topic(tmp_path):
    path = _two_channel_mcap(tmp_path / "bad_schema.mcap", profile="", encoding="protobuf", schemas={
        "/tf": ("foxglove.FrameTransform", b"\x0a\x05broken"),
        "/lidar_top": ("foxglove.PointCloud", b"\xff\xfe not a descriptor")})
    with pytest.raises(InputError, match=r"/tf \(foxglove.FrameTransform\) from its embedded schema"):
        list(open_log(path).events())


def test_frame_transforms_messages_and_cloud_poses_are_read(tmp_path):
    first = foxglove.frame_transform("map", "base_link", 5, np.eye(4))
    mount = np.eye(4)
    mount[:3, 3] = (1.0, 0.0, 2.0)
    second = foxglove.frame_transform("base_link", "lidar_top", 5, mount)
    points = np.array([[1.0, 2.0, 3.0, 9.0, 0.0], [np.nan, 0.0, 0.0, 1.0, 0.0]], dtype="<f4")
    fields = [PackedElementField(name=n, offset=4 * i, type=PackedElementField.FLOAT32)
              for i, n in enumerate(("x", "y", "z", "intensity", "ring"))]
    pose = Pose(position=Vector3(x=0.0, y=0.0, z=1.5), orientation=Quaternion(x=0.0, y=0.0, z=1.0, w=0.0))  # 180° yaw
    cloud = PointCloud(timestamp=foxglove.timestamp(6), frame_id="lidar_top", point_stride=20, fields=fields,
                       data=points.tobytes(), pose=pose)
    path = write_foxglove_mcap([("/tf", 5, FrameTransforms(transforms=[first, second])), ("/lidar_top", 6, cloud)],
                               tmp_path / "tfs.mcap")
    events = list(open_log(path).events())
    transforms = [e for e in events if isinstance(e, TransformMessage)]
    assert [(t.parent, t.child, t.static) for t in transforms] == [("map", "base_link", False),
                                                                  ("base_link", "lidar_top", True)]
    np.testing.assert_allclose(transforms[1].child_to_parent, mount, atol=1e-12)
    lidar = next(e for e in events if isinstance(e, LidarMessage))
    np.testing.assert_allclose(lidar.points, [[-1.0, -2.0, 4.5, 9.0]], atol=1e-6)  # NaN dropped, pose applied


def test_foxglove_image_and_calibration_conversion(tmp_path):
    from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
    from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    raw = RawImage(width=6, height=4, encoding="bgr8", step=18, data=rgb[:, :, ::-1].tobytes())
    np.testing.assert_array_equal(foxglove_messages.image_to_rgb(foxglove_messages.RAW_IMAGE, raw, name="raw"), rgb)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage

    png = CompressedImage(format="png", data=buffer.getvalue())
    np.testing.assert_array_equal(foxglove_messages.image_to_rgb(foxglove_messages.COMPRESSED_IMAGE, png, name="png"), rgb)
    k = [100.0, 0.0, 3.0, 0.0, 110.0, 2.0, 0.0, 0.0, 1.0]
    k_out, size = foxglove_messages.camera_calibration_to_intrinsics(CameraCalibration(width=6, height=4, K=k))
    np.testing.assert_array_equal(k_out, np.array(k).reshape(3, 3))
    assert size == (4, 6)
    with pytest.raises(InputError, match="cam_x"):
        foxglove_messages.camera_calibration_to_intrinsics(CameraCalibration(width=6, height=4), name="cam_x")


def test_a_ros_definition_that_does_not_parse_is_an_input_error_not_storage_damage(tmp_path):
    """A cut-off ROS 2 MCAP (streamed) whose /tf schema is not a message definition."""
    path = _two_channel_mcap(tmp_path / "ros_bad_def.mcap", profile="ros2", encoding="cdr", finish=False, schemas={
        "/tf": ("custom_msgs/msg/Weird", b"\n\x05broken"), "/LIDAR_TOP": ("sensor_msgs/msg/PointCloud2", b"")})
    with pytest.raises(InputError, match="cannot parse the definition of custom_msgs/msg/Weird"):
        list(open_log(path).events())  # before: a LogError "unreadable ... (truncated or corrupt storage)"


def test_a_cut_off_foxglove_recording_is_streamed_up_to_the_damage(recording, tmp_path):
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(recording.read_bytes()[: int(recording.stat().st_size * 0.6)])
    source = open_log(cut)
    assert isinstance(source, FoxgloveMcapSource) and not source.layout.indexed
    assert source.count_lidar_messages() is None
    assembler = FrameAssembler(settings=SyncSettings(num_sweeps=1))
    frames = list(assembler.frames(source.events()))
    assert 0 < len(frames) < FRAMES and "cut.mcap" in assembler.log_error and "truncated" in assembler.log_error
    assert all(f.points is not None for f in frames)  # what was read is whole
