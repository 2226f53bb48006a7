"""Which topic of a recorded log carries which sensor.

Two built-in maps follow the public nuScenes conversions:

* ``ros``: the nuScenes → ROS 2 bag conversions (``/CAM_FRONT/image_rect_compressed``,
  ``/CAM_FRONT/camera_info``, ``/LIDAR_TOP``, ``/tf``, ``/tf_static``; sensor frame ids equal to
  the nuScenes channel names);
* ``foxglove``: Foxglove's nuScenes → MCAP converter (foxglove/nuscenes2mcap): the same names in
  lower case (``/lidar_top``, ``/cam_front/image_rect_compressed``, ``/cam_front/camera_info``),
  lower-case frame ids (``lidar_top``, ``cam_front``) and every transform on ``/tf`` (no
  ``/tf_static``).

Both use the vehicle frame ``base_link`` and the world frame ``map``.  Without a map file the
one whose LiDAR topic the log has is taken (:func:`detect_topic_map`).  A YAML file overrides
any name of the ``ros`` map::

    lidar:
      topic: /velodyne_points
      frame_id: velodyne          # empty: take the frame id from each message header
    cameras:
      CAM_FRONT: {image: /front/image_raw, info: /front/camera_info, frame_id: front_optical}
    base_frame: base_link
    world_frame: odom             # any frame fixed in the world (odom or map)

Camera names are the nuScenes channel names; cameras not listed keep their defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from bev_ddp.config import load_config
from bev_ddp.data.sensors import CAMERA_NAMES  # the order the model expects
from bev_ddp.errors import ConfigError

__all__ = ["CAMERA_NAMES", "TopicMap", "CameraTopics", "TopicMapSchema", "default_topic_map", "foxglove_topic_map",
           "detect_topic_map", "load_topic_map"]


@dataclass
class CameraTopicsSchema:
    """Topics of one camera.  ``image`` may carry ``sensor_msgs/Image`` or ``CompressedImage``."""

    image: str = ""
    info: str = ""
    frame_id: str = ""  # empty: the image message's header frame id


@dataclass
class LidarTopicSchema:
    topic: str = "/LIDAR_TOP"
    frame_id: str = ""  # empty: the point cloud's header frame id


def _default_cameras() -> dict[str, CameraTopicsSchema]:  # the ``ros`` layout
    return {
        name: CameraTopicsSchema(image=f"/{name}/image_rect_compressed", info=f"/{name}/camera_info", frame_id=name)
        for name in CAMERA_NAMES
    }


@dataclass
class TopicMapSchema:
    """YAML schema of a topic map (see the module docstring)."""

    lidar: LidarTopicSchema = field(default_factory=LidarTopicSchema)
    cameras: dict[str, CameraTopicsSchema] = field(default_factory=_default_cameras)
    tf: str = "/tf"
    tf_static: str = "/tf_static"
    base_frame: str = "base_link"
    world_frame: str = "map"


@dataclass(frozen=True)
class CameraTopics:
    name: str
    image: str
    info: str
    frame_id: str


@dataclass(frozen=True)
class TopicMap:
    """Resolved topic map: every camera of :data:`CAMERA_NAMES` has an entry."""

    lidar_topic: str
    lidar_frame: str
    cameras: tuple[CameraTopics, ...]
    tf: str
    tf_static: str
    base_frame: str
    world_frame: str

    def camera_by_image_topic(self) -> dict[str, CameraTopics]:
        return {c.image: c for c in self.cameras}

    def camera_by_info_topic(self) -> dict[str, CameraTopics]:
        return {c.info: c for c in self.cameras if c.info}

    def sensor_of(self, topic: str) -> str:
        """The sensor a topic feeds, as flags name it: ``lidar``, a camera name, ``camera_info:<camera>`` or ``tf``."""
        if topic == self.lidar_topic:
            return "lidar"
        if topic in (cameras := self.camera_by_image_topic()):
            return cameras[topic].name
        if topic in (infos := self.camera_by_info_topic()):
            return f"camera_info:{infos[topic].name}"
        return "tf"


def _resolve(cfg) -> TopicMap:
    unknown = sorted(set(cfg.cameras) - set(CAMERA_NAMES))
    if unknown:
        raise ConfigError(f"topic map: unknown camera name(s) {unknown}; use {list(CAMERA_NAMES)}")
    cameras = []
    for name in CAMERA_NAMES:
        cam = cfg.cameras[name]
        if not cam.image:
            raise ConfigError(f"topic map: camera {name} has no image topic")
        cameras.append(CameraTopics(name=name, image=cam.image, info=cam.info, frame_id=cam.frame_id))
    topics = [c.image for c in cameras] + [c.info for c in cameras if c.info] + [cfg.lidar.topic]
    duplicates = sorted({t for t in topics if topics.count(t) > 1})
    if duplicates:
        raise ConfigError(f"topic map: topic(s) {duplicates} assigned to more than one sensor")
    return TopicMap(
        lidar_topic=cfg.lidar.topic,
        lidar_frame=cfg.lidar.frame_id,
        cameras=tuple(cameras),
        tf=cfg.tf,
        tf_static=cfg.tf_static,
        base_frame=cfg.base_frame,
        world_frame=cfg.world_frame,
    )


def default_topic_map() -> TopicMap:
    """The ``ros`` layout's names (see the module docstring)."""
    return _resolve(OmegaConf.structured(TopicMapSchema))


def foxglove_topic_map() -> TopicMap:
    """The ``foxglove`` layout's names: foxglove/nuscenes2mcap's output (see the module docstring)."""
    cameras = {name: CameraTopicsSchema(image=f"/{name.lower()}/image_rect_compressed",
                                        info=f"/{name.lower()}/camera_info", frame_id=name.lower())
               for name in CAMERA_NAMES}
    schema = TopicMapSchema(lidar=LidarTopicSchema(topic="/lidar_top"), cameras=cameras, tf_static="")
    return _resolve(OmegaConf.structured(schema))


BUILTIN_TOPIC_MAPS = {"ros": default_topic_map, "foxglove": foxglove_topic_map}


def detect_topic_map(available_topics: set[str]) -> TopicMap:
    """The built-in map whose LiDAR topic is among ``available_topics`` (``ros`` when none is)."""
    for build in BUILTIN_TOPIC_MAPS.values():
        topics = build()
        if topics.lidar_topic in available_topics:
            return topics
    return default_topic_map()


def load_topic_map(path: str | Path | None) -> TopicMap:
    """Read a YAML topic map over the defaults; ``None`` gives :func:`default_topic_map`."""
    if path is None:
        return default_topic_map()
    return _resolve(load_config(path, schema=TopicMapSchema))
