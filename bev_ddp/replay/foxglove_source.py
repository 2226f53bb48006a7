"""MCAP files of Foxglove protobuf messages (e.g. foxglove/nuscenes2mcap's output) as sensor events.

Messages are decoded with the protobuf schemas embedded in the file (``mcap_protobuf``'s
``DecoderFactory``), so no generated classes are needed.  Topics (see
:mod:`~bev_ddp.replay.topics`): the LiDAR carries ``foxglove.PointCloud``, each camera
``foxglove.CompressedImage`` (or ``foxglove.RawImage``) and ``foxglove.CameraCalibration``, and
``/tf`` carries ``foxglove.FrameTransform`` or ``foxglove.FrameTransforms``.

This layout has no ``/tf_static``: sensor mounts come on ``/tf`` like the ego pose, stamped at
keyframes only.  A transform whose parent is the vehicle frame (``base_frame``) is a rigid mount
and is kept as static, so sweeps between keyframes find their sensors.

Errors: a topic with another schema, or a schema the decoder cannot build, is an
:class:`~bev_ddp.errors.InputError` (exit 2, one line); a message that does not parse becomes a
:class:`~bev_ddp.replay.events.CorruptMessage` (the frame is flagged); storage that cannot be read
further (a truncated file) ends the stream with a :class:`~bev_ddp.replay.events.LogError`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from bev_ddp.errors import InputError
from bev_ddp.replay import foxglove_messages as fm
from bev_ddp.replay.bag_source import STORAGE_ERRORS
from bev_ddp.replay.events import (
    CameraInfoMessage,
    CameraMessage,
    CorruptMessage,
    Event,
    LidarMessage,
    LogError,
    TransformMessage,
)
from bev_ddp.replay.mcap_layout import PROTOBUF_ENCODING, McapLayout, inspect_mcap
from bev_ddp.replay.topics import TopicMap


class FoxgloveMcapSource:
    """Sensor events of an MCAP file of Foxglove protobuf messages.

    Args:
        path: the ``.mcap`` file.
        topics: which topic is which sensor.
        layout: the file's channels, when already read (:func:`~bev_ddp.replay.mcap_layout.inspect_mcap`).

    Raises:
        InputError: no LiDAR topic, or a sensor topic carrying another schema or encoding.
    """

    def __init__(self, path: str | Path, *, topics: TopicMap, layout: McapLayout | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"bag not found: {self.path}")
        self.topics = topics
        self.layout = layout if layout is not None else inspect_mcap(self.path)
        self._cameras = topics.camera_by_image_topic()
        self._infos = topics.camera_by_info_topic()
        self.expected: dict[str, tuple[str, ...]] = {
            topics.lidar_topic: (fm.POINT_CLOUD,),
            topics.tf: (fm.FRAME_TRANSFORM, fm.FRAME_TRANSFORMS),
            **{topic: fm.IMAGE_SCHEMAS for topic in self._cameras},
            **{topic: (fm.CAMERA_CALIBRATION,) for topic in self._infos},
        }
        self._check_lidar_topic(self.layout.topics)
        for channel in self.layout.channels:
            self._check_channel(channel.topic, channel.message_encoding, channel.schema_name)

    def describe(self) -> str:
        return f"Foxglove MCAP {self.path}"

    def _check_lidar_topic(self, available: set[str]) -> None:
        if self.topics.lidar_topic not in available:
            raise InputError(f"bag {self.path} has no LiDAR topic {self.topics.lidar_topic!r} "
                             f"(topics: {sorted(available)}); set lidar.topic in the topic map (--topics)")

    def _check_channel(self, topic: str, encoding: str, schema_name: str) -> None:
        accepted = self.expected.get(topic)
        if accepted is not None and (encoding != PROTOBUF_ENCODING or schema_name not in accepted):
            raise InputError(f"bag {self.path}: topic {topic} carries {schema_name or 'no schema'} ({encoding}), "
                             f"expected {' or '.join(accepted)} ({PROTOBUF_ENCODING})")

    def count_lidar_messages(self) -> int | None:
        """LiDAR messages from the file's statistics; ``None`` when it has no summary."""
        from mcap.reader import make_reader

        if not self.layout.indexed:
            return None
        try:
            with open(self.path, "rb") as stream:
                summary = make_reader(stream).get_summary()
        except STORAGE_ERRORS:
            return None
        if summary is None or summary.statistics is None:
            return None
        ids = [i for i, c in summary.channels.items() if c.topic == self.topics.lidar_topic]
        return sum(summary.statistics.channel_message_counts.get(i, 0) for i in ids) or None

    def events(self) -> Iterator[Event]:
        """Yield the file's sensor events in log-time order (file order when it has no summary)."""
        from mcap.reader import NonSeekingReader, SeekingReader

        with open(self.path, "rb") as stream:
            if self.layout.indexed:
                records = SeekingReader(stream).iter_messages(topics=list(self.expected), log_time_order=True)
            else:
                records = NonSeekingReader(stream, validate_crcs=True).iter_messages(
                    topics=list(self.expected), log_time_order=False)
            decoders: dict[int, Callable[[bytes], Any]] = {}
            last_receive = 0
            while True:
                try:
                    schema, channel, message = next(records)
                except StopIteration:
                    return
                except STORAGE_ERRORS as exc:
                    reason = "" if self.layout.indexed else " [the file has no summary: streamed]"
                    yield LogError(receive_ns=last_receive, error=f"bag {self.path} is unreadable after "
                                   f"t={last_receive} ns (truncated or corrupt storage): {exc!r}{reason}")
                    return
                last_receive = message.log_time
                schema_name = schema.name if schema is not None else ""
                if channel.id not in decoders:
                    self._check_channel(channel.topic, channel.message_encoding, schema_name)
                    decoders[channel.id] = self._decoder(channel, schema)
                yield from self._convert(channel.topic, schema_name, message.log_time,
                                         message.data, decoders[channel.id])

    def _decoder(self, channel, schema) -> Callable[[bytes], Any]:
        """The protobuf decoder built from the schema embedded in the file."""
        from mcap_protobuf.decoder import DecoderFactory

        try:
            decoder = DecoderFactory().decoder_for(channel.message_encoding, schema)
        except Exception as exc:  # noqa: BLE001 - any failure to build the schema's classes
            raise InputError(f"bag {self.path}: cannot build a decoder for {channel.topic} "
                             f"({schema.name if schema else 'no schema'}) from its embedded schema: {exc}") from exc
        if decoder is None:
            raise InputError(f"bag {self.path}: topic {channel.topic} has no protobuf schema to decode it with")
        return decoder

    def _convert(self, topic: str, schema: str, receive_ns: int, raw: bytes,
                 decode: Callable[[bytes], Any]) -> Iterator[Event]:
        name = f"{topic} @ {receive_ns} ns"
        try:
            msg = decode(raw)
        except Exception as exc:  # noqa: BLE001 - any failure to parse recorded bytes is a corrupt payload
            yield CorruptMessage(topic=topic, sensor=self.topics.sensor_of(topic), receive_ns=receive_ns,
                                 error=f"{name}: cannot decode {schema}: {exc!r}")
            return
        try:
            if topic == self.topics.lidar_topic:
                points = fm.point_cloud_to_points(msg, name=name)
                yield LidarMessage(stamp_ns=fm.stamp_ns(msg.timestamp), receive_ns=receive_ns,
                                   frame_id=msg.frame_id.lstrip("/"), points=points)
            elif topic in self._cameras:
                yield CameraMessage(camera=self._cameras[topic].name, stamp_ns=fm.stamp_ns(msg.timestamp),
                                    receive_ns=receive_ns, frame_id=msg.frame_id.lstrip("/"),
                                    decode=lambda: fm.image_to_rgb(schema, msg, name=name))
            elif topic in self._infos:
                intrinsics, size = fm.camera_calibration_to_intrinsics(msg, name=name)
                yield CameraInfoMessage(camera=self._infos[topic].name, receive_ns=receive_ns,
                                        intrinsics=intrinsics, size=size)
            elif topic == self.topics.tf:
                transforms = msg.transforms if schema == fm.FRAME_TRANSFORMS else [msg]
                events = [self._transform(tf, receive_ns, name) for tf in transforms]
                yield from events
        except (InputError, AttributeError, ValueError) as exc:
            yield CorruptMessage(topic=topic, sensor=self.topics.sensor_of(topic), receive_ns=receive_ns, error=f"{name}: {exc}")

    def _transform(self, tf, receive_ns: int, name: str) -> TransformMessage:
        parent = tf.parent_frame_id.lstrip("/")
        return TransformMessage(parent=parent, child=tf.child_frame_id.lstrip("/"), stamp_ns=fm.stamp_ns(tf.timestamp),
                                receive_ns=receive_ns, child_to_parent=fm.frame_transform_to_matrix(tf, name=name),
                                static=parent == self.topics.base_frame)
