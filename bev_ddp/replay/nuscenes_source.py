"""A nuScenes scene (real or the synthetic world) as a sensor event stream.

Read with nuscenes-devkit.  Every ``sample_data`` of ``LIDAR_TOP`` in the scene becomes a LiDAR
message — sweeps between keyframes too, not only keyframes — and every camera ``sample_data`` a
camera message, all ordered by timestamp.  Calibrations become ``/tf_static``-like transforms
(``base_frame`` → sensor channel name) and camera intrinsics; each ``ego_pose`` becomes a
time-stamped ``world_frame`` → ``base_frame`` transform, so the frame assembler moves sweeps and
cameras with the ego motion exactly as the dataset's info files do.

nuScenes timestamps are microseconds; events carry nanoseconds (× 1000).
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from bev_ddp.data.geometry import record_to_matrix
from bev_ddp.data.lidar_io import load_points
from bev_ddp.data.sensors import CAMERA_NAMES, LIDAR_NAME
from bev_ddp.errors import InputError
from bev_ddp.replay.events import CameraInfoMessage, CameraMessage, Event, LidarMessage, TransformMessage


@dataclass(frozen=True)
class SceneRecords:
    """The ``sample_data`` records of one scene per channel, in time order."""

    scene: dict
    channels: dict[str, list[dict]]


def load_nuscenes(dataroot: str | Path, version: str):
    """Open a nuScenes dataroot with the devkit (its table loading output is silenced)."""
    from nuscenes.nuscenes import NuScenes

    dataroot = Path(dataroot)
    if not (dataroot / version).is_dir():
        raise InputError(f"nuScenes tables not found: {dataroot / version} (check --dataroot and --version)")
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (AssertionError, KeyError, ValueError, OSError) as exc:
        raise InputError(f"nuScenes dataroot {dataroot} ({version}) cannot be loaded: {exc!r}") from exc


def find_scene(nusc, scene: str) -> dict:
    """Scene record by name (``scene-0061``) or token."""
    for record in nusc.scene:
        if scene in (record["name"], record["token"]):
            return record
    names = ", ".join(r["name"] for r in nusc.scene[:20])
    raise InputError(f"scene {scene!r} not in {nusc.dataroot} ({nusc.version}); scenes: {names}")


def scene_records(nusc, scene: dict) -> SceneRecords:
    """All ``sample_data`` of the scene for LIDAR_TOP and the six cameras, in time order."""
    first = nusc.get("sample", scene["first_sample_token"])
    channels: dict[str, list[dict]] = {}
    for channel in (LIDAR_NAME, *CAMERA_NAMES):
        if channel not in first["data"]:
            channels[channel] = []
            continue
        record = nusc.get("sample_data", first["data"][channel])
        while record["prev"] and _in_scene(nusc, nusc.get("sample_data", record["prev"]), scene):
            record = nusc.get("sample_data", record["prev"])
        chain = []
        while True:
            chain.append(record)
            if not record["next"]:
                break
            record = nusc.get("sample_data", record["next"])
            if not _in_scene(nusc, record, scene):
                break
        channels[channel] = chain
    return SceneRecords(scene=scene, channels=channels)


def _in_scene(nusc, sample_data: dict, scene: dict) -> bool:
    return nusc.get("sample", sample_data["sample_token"])["scene_token"] == scene["token"]


def read_rgb_file(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an image file (Pillow), ``InputError`` naming the file if unreadable."""
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise InputError(f"camera image not found: {path}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"camera image {path} cannot be decoded: {exc}") from exc


class NuScenesSceneSource:
    """Sensor events of one nuScenes scene.

    Args:
        dataroot: nuScenes-format dataroot (``<dataroot>/<version>/*.json``, ``samples/``, ``sweeps/``).
        scene: scene name or token.
        version: table version folder.
        base_frame / world_frame: frame names used for the ego and world transforms.
    """

    def __init__(self, dataroot: str | Path, scene: str, *, version: str = "v1.0-mini",
                 base_frame: str = "base_link", world_frame: str = "map", nusc=None) -> None:
        self.dataroot = Path(dataroot)
        self.nusc = nusc if nusc is not None else load_nuscenes(self.dataroot, version)
        self.scene = find_scene(self.nusc, scene)
        self.records = scene_records(self.nusc, self.scene)
        self.base_frame = base_frame
        self.world_frame = world_frame
        if not self.records.channels[LIDAR_NAME]:
            raise InputError(f"scene {self.scene['name']} has no {LIDAR_NAME} data")

    def describe(self) -> str:
        return f"nuScenes scene {self.scene['name']} in {self.dataroot}"

    def count_lidar_messages(self) -> int:
        return len(self.records.channels[LIDAR_NAME])

    def events(self) -> Iterator[Event]:
        nusc = self.nusc
        items: list[tuple[int, int, dict, str]] = []  # (timestamp µs, order, record, channel)
        for channel, chain in self.records.channels.items():
            order = 0 if channel != LIDAR_NAME else 1  # cameras first at equal stamps
            items.extend((r["timestamp"], order, r, channel) for r in chain)
        items.sort(key=lambda item: (item[0], item[1]))
        if not items:
            return
        t0 = items[0][0] * 1000
        seen_calibrations: set[str] = set()
        for stamp_us, _, record, channel in items:
            t = stamp_us * 1000
            calib_token = record["calibrated_sensor_token"]
            if calib_token not in seen_calibrations:
                seen_calibrations.add(calib_token)
                calib = nusc.get("calibrated_sensor", calib_token)
                yield TransformMessage(parent=self.base_frame, child=channel, stamp_ns=t, receive_ns=min(t, t0),
                                       child_to_parent=record_to_matrix(calib), static=True)
                if channel in CAMERA_NAMES:
                    yield CameraInfoMessage(camera=channel, receive_ns=t,
                                            intrinsics=np.asarray(calib["camera_intrinsic"], dtype=np.float64),
                                            size=(int(record["height"]), int(record["width"])))
            pose = nusc.get("ego_pose", record["ego_pose_token"])
            yield TransformMessage(parent=self.world_frame, child=self.base_frame, stamp_ns=pose["timestamp"] * 1000,
                                   receive_ns=t, child_to_parent=record_to_matrix(pose), static=False)
            path = self.dataroot / record["filename"]
            if channel == LIDAR_NAME:
                meta = {"sample_data_token": record["token"], "scene": self.scene["name"],
                        "is_key_frame": bool(record["is_key_frame"])}
                if record["is_key_frame"]:
                    meta["token"] = record["sample_token"]
                try:
                    points = load_points(path)[:, :4]
                    error = None
                except InputError as exc:
                    points, error = None, str(exc)
                yield LidarMessage(stamp_ns=t, receive_ns=t, frame_id=channel, points=points, error=error, meta=meta)
            else:
                yield CameraMessage(camera=channel, stamp_ns=t, receive_ns=t, frame_id=channel,
                                    decode=lambda p=path: read_rgb_file(p))
