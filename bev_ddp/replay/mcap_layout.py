"""What an MCAP file holds (profile, channels, encodings) and which source reads it.

:func:`open_log` picks the reader of a recorded drive:

* a rosbag2 directory or a ``.db3`` file: :class:`~bev_ddp.replay.bag_source.RosbagSource`;
* an ``.mcap`` file with ROS 2 CDR messages (profile ``ros2`` or message encoding ``cdr``):
  :class:`~bev_ddp.replay.bag_source.RosbagSource`;
* an ``.mcap`` file with protobuf messages (e.g. foxglove/nuscenes2mcap's output: empty profile,
  ``foxglove.*`` schemas): :class:`~bev_ddp.replay.foxglove_source.FoxgloveMcapSource`;
* anything else: :class:`~bev_ddp.errors.InputError` naming the profile and the encodings found.

Without a topic map file the built-in map whose LiDAR topic the file has is used
(:func:`~bev_ddp.replay.topics.detect_topic_map`).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from bev_ddp.errors import InputError
from bev_ddp.replay.topics import detect_topic_map, load_topic_map

ROS2_ENCODING = "cdr"
PROTOBUF_ENCODING = "protobuf"
_SCAN_MESSAGES = 5000  # records scanned for channels when a file has no summary


@dataclass(frozen=True)
class ChannelInfo:
    topic: str
    message_encoding: str
    schema_name: str
    schema_encoding: str


@dataclass(frozen=True)
class McapLayout:
    """Profile and channels of an MCAP file; ``indexed`` is False when it has no summary."""

    path: Path
    profile: str
    channels: tuple[ChannelInfo, ...]
    indexed: bool

    @property
    def topics(self) -> set[str]:
        return {c.topic for c in self.channels}

    @property
    def encodings(self) -> set[str]:
        return {c.message_encoding for c in self.channels}

    def describe(self) -> str:
        return f"profile {self.profile!r}, message encodings {sorted(self.encodings) or 'none'}"


def inspect_mcap(path: str | Path) -> McapLayout:
    """Read the header and channels of an MCAP file (from its summary, else from its first records).

    Raises:
        InputError: not an MCAP file, or its header cannot be read.
    """
    from mcap.exceptions import McapError
    from mcap.reader import SeekingReader
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    path = Path(path)
    damage: BaseException | None = None
    try:
        with open(path, "rb") as stream:
            reader = SeekingReader(stream)
            profile = reader.get_header().profile
            try:
                summary = reader.get_summary()
            except (McapError, EOFError, ValueError, OSError, StopIteration):
                summary = None  # cut off: no footer
            if summary is not None and summary.channels:
                schemas, channels = summary.schemas, summary.channels
            else:
                schemas, channels = {}, {}
                stream.seek(0)
                seen = 0
                try:
                    for record in StreamReader(stream).records:
                        if isinstance(record, Schema):
                            schemas[record.id] = record
                        elif isinstance(record, Channel):
                            channels[record.id] = record
                        elif isinstance(record, Message):
                            seen += 1
                            if seen >= _SCAN_MESSAGES:
                                break
                except (McapError, EOFError, ValueError, OSError, KeyError, IndexError, struct.error) as exc:
                    damage = exc  # damaged past here: the channels seen so far decide
    except (McapError, EOFError, ValueError, OSError, StopIteration, struct.error) as exc:
        raise InputError(f"bag {path} cannot be opened as MCAP (corrupt or truncated?): {exc!r}") from exc
    if not channels and damage is not None:
        raise InputError(f"bag {path} is truncated or corrupt before its first channel record "
                         f"({path.stat().st_size} bytes, no summary): {damage!r}")
    infos = []
    for channel in channels.values():
        schema = schemas.get(channel.schema_id)
        infos.append(ChannelInfo(channel.topic, channel.message_encoding, schema.name if schema else "",
                                 schema.encoding if schema else ""))
    return McapLayout(path=path, profile=profile, channels=tuple(infos), indexed=summary is not None)


def open_log(path: str | Path, *, topics_file: str | Path | None = None):
    """The event source of a recorded drive (see the module docstring).

    Raises:
        InputError: missing file, unreadable MCAP, or an MCAP whose encoding replay cannot read.
    """
    from bev_ddp.replay.bag_source import RosbagSource, check_log_path

    path = check_log_path(path)
    if path.is_dir() or path.suffix != ".mcap":
        return RosbagSource(path, topics=load_topic_map(topics_file))
    layout = inspect_mcap(path)
    topics = load_topic_map(topics_file) if topics_file is not None else detect_topic_map(layout.topics)
    if layout.profile == "ros2" or ROS2_ENCODING in layout.encodings:
        return RosbagSource(path, topics=topics)
    if PROTOBUF_ENCODING in layout.encodings:
        from bev_ddp.replay.foxglove_source import FoxgloveMcapSource

        return FoxgloveMcapSource(path, topics=topics, layout=layout)
    raise InputError(f"bag {path}: cannot replay an MCAP with {layout.describe()}; replay reads ROS 2 "
                     f"({ROS2_ENCODING}) or Foxglove protobuf ({PROTOBUF_ENCODING}) messages")

