"""ROS message conversion, topic maps and the tf buffer."""
from __future__ import annotations

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from bev_ddp.errors import ConfigError, InputError
from bev_ddp.replay import export, ros_messages
from bev_ddp.replay.topics import CAMERA_NAMES, default_topic_map, load_topic_map
from bev_ddp.replay.transforms import TransformTree

T = get_typestore(Stores.ROS2_HUMBLE).types


def _cloud_msg(points: np.ndarray, *, big_endian: bool = False, pad: int = 0, rows: int = 1):
    """A cloud with x, y, z float32, a uint16 ring between y and z, intensity float64, padding."""
    n = len(points) // rows
    dtype = np.dtype({"names": ["x", "y", "ring", "z", "intensity"],
                      "formats": ["f4", "f4", "u2", "f4", "f8"], "offsets": [0, 4, 8, 12, 16],
                      "itemsize": 24 + pad}).newbyteorder(">" if big_endian else "<")
    rec = np.zeros(len(points), dtype=dtype)
    for i, key in enumerate(("x", "y", "z", "intensity")):
        rec[key] = points[:, i]
    rec["ring"] = 7
    f = T["sensor_msgs/msg/PointField"]
    fields = [f(name="x", offset=0, datatype=7, count=1), f(name="y", offset=4, datatype=7, count=1),
              f(name="ring", offset=8, datatype=4, count=1), f(name="z", offset=12, datatype=7, count=1),
              f(name="intensity", offset=16, datatype=8, count=1)]
    row_step = n * dtype.itemsize + 3  # 3 bytes of row padding
    data = np.zeros(rows * row_step, np.uint8)
    raw = rec.view(np.uint8).reshape(rows, -1)
    data.reshape(rows, row_step)[:, : raw.shape[1]] = raw
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=5), frame_id="lidar")
    return T["sensor_msgs/msg/PointCloud2"](header=header, height=rows, width=n, fields=fields, is_bigendian=big_endian,
                                            point_step=dtype.itemsize, row_step=row_step, data=data, is_dense=False)


@pytest.mark.parametrize("big_endian", [False, True])
def test_pointcloud2_reads_fields_by_offset_with_padding_and_rows(big_endian):
    points = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    msg = _cloud_msg(points, big_endian=big_endian, pad=4, rows=3)
    out = ros_messages.pointcloud2_to_points(msg)
    assert out.dtype == np.float32 and out.shape == (12, 4)
    np.testing.assert_array_equal(out, points)


def test_pointcloud2_drops_nan_points_and_rejects_short_buffers():
    points = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    points[2, 1] = np.nan
    out = ros_messages.pointcloud2_to_points(_cloud_msg(points))
    np.testing.assert_array_equal(out, points[[0, 1, 3, 4]])
    short = _cloud_msg(points)
    short.data = short.data[:-10]
    with pytest.raises(InputError, match="/lidar_in_test.*bytes"):
        ros_messages.pointcloud2_to_points(short, name="/lidar_in_test")


def test_pointcloud2_without_xyz_is_an_input_error():
    msg = _cloud_msg(np.zeros((2, 4), np.float32))
    msg.fields = [f for f in msg.fields if f.name != "z"]
    with pytest.raises(InputError, match="'z'"):
        ros_messages.pointcloud2_to_points(msg)


def test_image_encodings_become_rgb():
    rgb = np.random.default_rng(2).integers(0, 255, (3, 5, 3), dtype=np.uint8)
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="cam")
    step = 5 * 3 + 2  # padded rows
    data = np.zeros((3, step), np.uint8)
    data[:, :15] = rgb[:, :, ::-1].reshape(3, 15)  # bgr8
    msg = T["sensor_msgs/msg/Image"](header=header, height=3, width=5, encoding="bgr8", is_bigendian=0, step=step,
                                     data=data.reshape(-1))
    np.testing.assert_array_equal(ros_messages.image_to_rgb(msg), rgb)
    msg.encoding = "32FC1"
    with pytest.raises(InputError, match="32FC1"):
        ros_messages.image_to_rgb(msg)


def test_compressed_image_roundtrip_and_corrupt_payload():
    from replay_helpers import jpeg_bytes

    msg = export.compressed_image(jpeg_bytes(0), 10, "cam")
    assert ros_messages.compressed_image_to_rgb(msg).shape == (24, 40, 3)
    msg.data = msg.data[:50]  # JPEG header only
    with pytest.raises(InputError, match="/cam/topic"):
        ros_messages.compressed_image_to_rgb(msg, name="/cam/topic")


def test_camera_info_and_transform_matrices():
    k = np.array([[100.0, 0, 20], [0, 110.0, 12], [0, 0, 1]])
    k_out, size = ros_messages.camera_info_to_intrinsics(export.camera_info(k, (24, 40), 0, "cam"))
    np.testing.assert_allclose(k_out, k)
    assert size == (24, 40)
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", [0.1, -0.2, 0.3]).as_matrix()
    matrix[:3, 3] = [1.0, 2.0, 3.0]
    tf = export.tf_message([("a", "b", 0, matrix)]).transforms[0]
    np.testing.assert_allclose(ros_messages.transform_to_matrix(tf.transform), matrix, atol=1e-12)


def test_topic_map_defaults_and_yaml_overrides(tmp_path):
    topics = default_topic_map()
    assert [c.name for c in topics.cameras] == list(CAMERA_NAMES)
    assert topics.cameras[0].image == "/CAM_FRONT/image_rect_compressed" and topics.lidar_topic == "/LIDAR_TOP"
    path = tmp_path / "topics.yaml"
    path.write_text("lidar: {topic: /points, frame_id: velodyne}\ncameras:\n  CAM_BACK: {image: /back/image_raw}\n"
                    "world_frame: odom\n")
    custom = load_topic_map(path)
    back = {c.name: c for c in custom.cameras}["CAM_BACK"]
    assert (custom.lidar_topic, custom.lidar_frame, custom.world_frame) == ("/points", "velodyne", "odom")
    assert back.image == "/back/image_raw" and back.info == "/CAM_BACK/camera_info"  # default kept


@pytest.mark.parametrize("text, match", [
    ("cameras: {CAM_TOP: {image: /x}}", "CAM_TOP"),
    ("lidar: {topik: /x}", "topik"),
    ("lidar: {topic: /CAM_FRONT/camera_info}", "more than one sensor"),
])
def test_topic_map_rejects_bad_yaml(tmp_path, text, match):
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_topic_map(path)


def _pose(x: float, yaw: float) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
    out[0, 3] = x
    return out


def test_transform_tree_chains_inverts_and_interpolates():
    tree = TransformTree(max_extrapolation_ns=10)
    sensor = _pose(1.0, np.pi / 2)
    tree.add_static("base", "sensor", sensor)
    tree.add("map", "base", 100, _pose(0.0, 0.0))
    tree.add("map", "base", 200, _pose(10.0, 0.4))
    mid = tree.lookup("map", "sensor", 150)
    np.testing.assert_allclose(mid, _pose(5.0, 0.2) @ sensor, atol=1e-9)
    np.testing.assert_allclose(tree.lookup("sensor", "map", 150) @ mid, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(tree.lookup("map", "sensor", 205), _pose(10.0, 0.4) @ sensor)  # nearest, within 10 ns
    assert tree.lookup("map", "sensor", 300) is None  # beyond the extrapolation limit
    assert tree.lookup("map", "camera", 150) is None  # unknown frame
