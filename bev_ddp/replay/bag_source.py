"""ROS 2 bags (sqlite3 or MCAP storage) and plain MCAP files as a sensor event stream.

Read with ``rosbags``: ``rosbags.rosbag2.Reader`` opens a rosbag2 directory (either storage
plugin), a single ``.db3`` file or a single ``.mcap`` file (e.g. written with ``mcap_ros2``), and
``rosbags.typesys`` deserialises the CDR payloads.  Message types: ``sensor_msgs/PointCloud2``
(LiDAR), ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (cameras),
``sensor_msgs/CameraInfo`` (intrinsics) and ``tf2_msgs/TFMessage`` (``/tf``, ``/tf_static``).

A payload that cannot be deserialised becomes a :class:`CorruptMessage` (the frame is flagged,
the replay goes on); storage that cannot be read any further (a truncated file) ends the stream
with a :class:`LogError` after everything readable.
"""
from __future__ import annotations

import sqlite3
import struct
from pathlib import Path
from typing import Iterator

from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.base import TypesysError

from bev_ddp.errors import InputError
from bev_ddp.replay import ros_messages
from bev_ddp.replay.events import (
    CameraInfoMessage,
    CameraMessage,
    CorruptMessage,
    Event,
    LidarMessage,
    LogError,
    TransformMessage,
)
from bev_ddp.replay.topics import TopicMap

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

# what a damaged storage file raises while being read (sqlite3, MCAP chunk/record parsing)
STORAGE_ERRORS: tuple[type[BaseException], ...] = (ReaderError, sqlite3.DatabaseError, OSError, EOFError,
                                                    struct.error, ValueError, KeyError, IndexError)
try:  # the mcap package's own error base (chunk CRC, bad magic, ...)
    from mcap.exceptions import McapError

    STORAGE_ERRORS += (McapError,)
except ImportError:  # pragma: no cover - mcap is a dependency of rosbags' MCAP plugin
    pass


class RosbagSource:
    """Sensor events of a ROS 2 bag or MCAP file.

    Args:
        path: rosbag2 directory (with ``metadata.yaml``), ``.db3`` or ``.mcap`` file.
        topics: which topic is which sensor.
        typestore_name: the ``rosbags`` type store of the standard messages; message types not in
            it are registered from the definitions stored in the bag.
    """

    def __init__(self, path: str | Path, *, topics: TopicMap, typestore_name: Stores = Stores.ROS2_HUMBLE) -> None:
        self.path = check_log_path(path)
        self.topics = topics
        self.typestore = get_typestore(typestore_name)
        self._cameras = topics.camera_by_image_topic()
        self._infos = topics.camera_by_info_topic()

    def describe(self) -> str:
        return f"bag {self.path}"

    def _open(self) -> Reader:
        try:
            reader = Reader(self.path)
            reader.open()
        except FileNotFoundError as exc:
            raise InputError(f"bag {self.path}: {exc}") from exc
        except STORAGE_ERRORS as exc:
            raise InputError(f"bag {self.path} cannot be opened (corrupt or truncated?): {exc}") from exc
        return reader

    def _mcap_files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(self.path.glob("*.mcap"))
        return [self.path] if self.path.suffix == ".mcap" else []

    def count_lidar_messages(self) -> int | None:
        """Number of LiDAR messages from the bag's index, ``None`` when unknown (a damaged MCAP
        file that can only be streamed).

        Raises:
            InputError: the bag cannot be opened at all.
        """
        try:
            reader = self._open()
        except InputError:
            if self._mcap_files():
                return None
            raise
        try:
            self._check_topic_types({c.topic: _ros2_name(c.msgtype) for c in _stored_connections(reader)
                                     if c.topic in self._wanted()})
            return sum(c.msgcount for c in reader.connections if c.topic == self.topics.lidar_topic) or None
        finally:
            reader.close()

    def events(self) -> Iterator[Event]:
        """Yield the log's sensor events in recording order (see the module docstring).

        An MCAP file that ``rosbags`` cannot open (no summary: the recording was cut off) is
        streamed record by record with the ``mcap`` library up to the damage.

        Raises:
            InputError: the bag cannot be opened or has no LiDAR topic.
        """
        try:
            reader = self._open()
        except InputError as exc:
            if not self._mcap_files():
                raise
            yield from self._stream_mcap(reason=str(exc))
            return
        try:
            stored = _stored_connections(reader)
            connections = [c for c in stored if c.topic in self._wanted()]
            self._check_lidar_topic({c.topic for c in stored})
            self._register_types((c.msgtype, getattr(c.msgdef, "data", "")) for c in connections)
            self._check_topic_types({c.topic: _ros2_name(c.msgtype) for c in connections})
            messages = ((c.topic, c.msgtype, t, raw) for c, t, raw in reader.messages(connections=connections))
            yield from self._convert_all(messages)
        finally:
            try:
                reader.close()
            except STORAGE_ERRORS:
                pass

    def _wanted(self) -> set[str]:
        return {self.topics.lidar_topic, self.topics.tf, self.topics.tf_static, *self._cameras, *self._infos}

    def _check_lidar_topic(self, available: set[str]) -> None:
        if self.topics.lidar_topic not in available:
            raise InputError(
                f"bag {self.path} has no LiDAR topic {self.topics.lidar_topic!r} (topics: {sorted(available)}); "
                "set lidar.topic in the topic map"
            )

    def _check_topic_types(self, types: dict[str, str]) -> None:
        """Every mapped topic must carry the message type its sensor needs (before the first frame)."""
        for topic, msgtype in types.items():
            expected = self._expected_types(topic)
            if expected and msgtype not in expected:
                raise InputError(f"bag {self.path}: topic {topic} ({self.topics.sensor_of(topic)}) carries {msgtype}, "
                                 f"expected {' or '.join(expected)}; fix the topic map")

    def _expected_types(self, topic: str) -> tuple[str, ...]:
        if topic == self.topics.lidar_topic:
            return (POINTCLOUD2,)
        if topic in self._cameras:
            return IMAGE_TYPES
        if topic in self._infos:
            return (CAMERA_INFO,)
        if topic in (self.topics.tf, self.topics.tf_static):
            return (TF_MESSAGE,)
        return ()

    def _convert_all(self, messages: Iterator[tuple[str, str, int, bytes]]) -> Iterator[Event]:
        last_receive = 0
        while True:
            try:
                item = next(messages)
            except StopIteration:
                return
            except InputError:  # a message definition that does not parse is the input's fault, not damage
                raise
            except STORAGE_ERRORS as exc:
                yield LogError(receive_ns=last_receive, error=f"bag {self.path} is unreadable after "
                               f"t={last_receive} ns (truncated or corrupt storage): {exc!r}")
                return
            topic, msgtype, receive_ns, raw = item
            last_receive = receive_ns
            yield from self._convert(topic, msgtype, receive_ns, raw)

    def _stream_mcap(self, reason: str) -> Iterator[Event]:
        """Messages of damaged MCAP file(s), read sequentially with ``mcap``'s streaming reader."""
        from mcap.reader import NonSeekingReader

        seen_topics: set[str] = set()
        for path in self._mcap_files():
            with open(path, "rb") as stream:
                records = NonSeekingReader(stream, validate_crcs=True).iter_messages(log_time_order=False)
                messages = self._stream_records(records, seen_topics)
                for event in self._convert_all(messages):
                    if isinstance(event, LogError):
                        self._check_lidar_topic(seen_topics)
                        yield LogError(receive_ns=event.receive_ns, error=f"{event.error} [{reason}]")
                        return
                    yield event
        self._check_lidar_topic(seen_topics)

    def _stream_records(self, records, seen_topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        registered: set[str] = set()
        wanted = self._wanted()
        for schema, channel, message in records:
            seen_topics.add(channel.topic)
            if channel.topic not in wanted or schema is None:
                continue
            if schema.name not in registered:
                self._register_types([(schema.name, schema.data.decode("utf-8", errors="replace"))])
                registered.add(schema.name)
            self._check_topic_types({channel.topic: _ros2_name(schema.name)})
            yield channel.topic, _ros2_name(schema.name), message.log_time, message.data

    def _register_types(self, types) -> None:
        """Register message types missing from the type store from (type name, definition) pairs."""
        for msgtype, msgdef in types:
            msgtype = _ros2_name(msgtype)
            if msgtype in self.typestore.types:
                continue
            if not msgdef:
                raise InputError(f"bag {self.path}: unknown message type {msgtype} and no definition stored")
            try:
                self.typestore.register(get_types_from_msg(msgdef, msgtype))
            except TypesysError as exc:
                raise InputError(f"bag {self.path}: cannot parse the definition of {msgtype}: {exc}") from exc

    def _convert(self, topic: str, msgtype: str, receive_ns: int, raw: bytes) -> Iterator[Event]:
        msgtype = _ros2_name(msgtype)
        try:
            msg = self.typestore.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # noqa: BLE001 - any failure to parse recorded bytes is a corrupt payload
            yield CorruptMessage(topic=topic, sensor=self.topics.sensor_of(topic), receive_ns=receive_ns,
                                 error=f"{topic} @ {receive_ns} ns: cannot deserialise {msgtype}: {exc!r}")
            return
        name = f"{topic} @ {receive_ns} ns"
        try:
            if topic == self.topics.lidar_topic:
                points = ros_messages.pointcloud2_to_points(msg, name=name)
                yield LidarMessage(stamp_ns=ros_messages.stamp_ns(msg.header), receive_ns=receive_ns,
                                   frame_id=msg.header.frame_id, points=points)
            elif topic in self._cameras:
                yield self._camera_message(self._cameras[topic].name, msgtype, msg, receive_ns, name)
            elif topic in self._infos:
                intrinsics, size = ros_messages.camera_info_to_intrinsics(msg, name=name)
                yield CameraInfoMessage(camera=self._infos[topic].name, receive_ns=receive_ns,
                                        intrinsics=intrinsics, size=size)
            elif topic in (self.topics.tf, self.topics.tf_static):
                for tf in msg.transforms:
                    yield TransformMessage(
                        parent=tf.header.frame_id.lstrip("/"),
                        child=tf.child_frame_id.lstrip("/"),
                        stamp_ns=ros_messages.stamp_ns(tf.header),
                        receive_ns=receive_ns,
                        child_to_parent=ros_messages.transform_to_matrix(tf.transform),
                        static=topic == self.topics.tf_static,
                    )
        except (InputError, AttributeError) as exc:
            yield CorruptMessage(topic=topic, sensor=self.topics.sensor_of(topic), receive_ns=receive_ns, error=f"{name}: {exc}")

    @staticmethod
    def _camera_message(camera: str, msgtype: str, msg, receive_ns: int, name: str) -> CameraMessage:
        if msgtype not in IMAGE_TYPES:
            raise InputError(f"{name}: camera topic carries {msgtype}, expected one of {IMAGE_TYPES}")
        if msgtype.endswith("CompressedImage"):
            decode = lambda: ros_messages.compressed_image_to_rgb(msg, name=name)  # noqa: E731
        else:
            decode = lambda: ros_messages.image_to_rgb(msg, name=name)  # noqa: E731
        return CameraMessage(camera=camera, stamp_ns=ros_messages.stamp_ns(msg.header), receive_ns=receive_ns,
                             frame_id=msg.header.frame_id.lstrip("/"), decode=decode)


def check_log_path(path: str | Path) -> Path:
    """``path`` if it is a regular file or a folder (a rosbag2 directory); a FIFO, socket or device
    would block or never end, so anything else raises :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"bag not found: {path}")
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"bag {path} is not a regular file or a bag folder")
    return path


def _stored_connections(reader: Reader) -> list:
    """The connections the storage files hold.  A rosbag2 directory's reader matches the
    ``metadata.yaml`` topics to them by topic, type *and* QoS profiles, so a bag re-indexed or
    written by another tool (QoS in the yaml differing from the file's) would yield no message;
    the files' own connections always match themselves."""
    storages = getattr(reader.storage, "storages", None)  # rosbags' directory reader: one per file
    if not storages:
        return list(reader.connections)
    return [c for storage in storages for c in storage.connections]


def _ros2_name(msgtype: str) -> str:
    """``sensor_msgs/Image`` → ``sensor_msgs/msg/Image`` (MCAP schemas may omit ``msg``)."""
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else msgtype
