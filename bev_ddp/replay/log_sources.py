"""Which source reads a recorded drive: :func:`open_log`.

* a rosbag2 directory or a ``.db3`` file: :class:`~bev_ddp.replay.bag_source.RosbagSource`;
* an ``.mcap`` file with ROS 2 CDR messages (profile ``ros2`` or message encoding ``cdr``):
  :class:`~bev_ddp.replay.bag_source.RosbagSource`;
* an ``.mcap`` file with protobuf messages (e.g. foxglove/nuscenes2mcap's output: empty profile,
  ``foxglove.*`` schemas): :class:`~bev_ddp.replay.foxglove_source.FoxgloveMcapSource`;
* anything else: :class:`~bev_ddp.errors.InputError` naming the profile and the encodings found.

Without a topic map file the built-in map whose LiDAR topic the file has is used
(:func:`~bev_ddp.replay.topics.detect_topic_map`).  The sources and :mod:`~bev_ddp.replay.mcap_layout`
sit below this module; nothing below imports it.
"""
from __future__ import annotations

from pathlib import Path

from bev_ddp.errors import InputError
from bev_ddp.replay.bag_source import RosbagSource, check_log_path
from bev_ddp.replay.foxglove_source import FoxgloveMcapSource
from bev_ddp.replay.mcap_layout import PROTOBUF_ENCODING, ROS2_ENCODING, inspect_mcap
from bev_ddp.replay.topics import detect_topic_map, load_topic_map


def open_log(path: str | Path, *, topics_file: str | Path | None = None):
    """The event source of a recorded drive (see the module docstring).

    Raises:
        InputError: missing file, unreadable MCAP, or an MCAP whose encoding replay cannot read.
    """
    path = check_log_path(path)  # a regular file or a bag folder (a FIFO would block forever)
    if path.is_dir() or path.suffix != ".mcap":
        return RosbagSource(path, topics=load_topic_map(topics_file))
    layout = inspect_mcap(path)
    topics = load_topic_map(topics_file) if topics_file is not None else detect_topic_map(layout.topics)
    if layout.profile == "ros2" or ROS2_ENCODING in layout.encodings:
        return RosbagSource(path, topics=topics)
    if PROTOBUF_ENCODING in layout.encodings:
        return FoxgloveMcapSource(path, topics=topics, layout=layout)
    raise InputError(f"bag {path}: cannot replay an MCAP with {layout.describe()}; replay reads ROS 2 "
                     f"({ROS2_ENCODING}) or Foxglove protobuf ({PROTOBUF_ENCODING}) messages")

