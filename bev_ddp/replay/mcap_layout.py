"""What an MCAP file holds (profile, channels, encodings): :func:`inspect_mcap`.

The sources read files; which one reads a given log is chosen above them, by
:func:`bev_ddp.replay.log_sources.open_log` from this layout.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from bev_ddp.errors import InputError

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
