"""Assemble model frames around each LiDAR sweep from a stream of recorded sensor events.

For every LiDAR message of the log exactly one :class:`SensorFrame` comes out, in log order:

1. **Cameras**: for each of the six cameras the image whose stamp is nearest to the LiDAR stamp
   is taken when it is within ``tolerance_ns``; otherwise the camera is missing for this frame
   (flag ``camera_missing:<CAM>``; ``camera_corrupt:<CAM>`` when the nearest image could not be
   decoded).  A frame waits until every camera has delivered an image stamped after the tolerance
   window, or until the log has moved ``arrival_slack_ns`` past it, so images recorded after
   their LiDAR sweep are still found.
2. **Extrinsics** come from the tf tree: camera → LiDAR is looked up through the world frame
   with the camera pose at the image stamp and the LiDAR pose at the sweep stamp (the ego
   vehicle moves between the two); no path → ``camera_no_tf:<CAM>``; no intrinsics yet →
   ``camera_no_info:<CAM>``.  Such cameras are marked invalid and the model runs degraded.
3. **Sweeps**: the previous ``num_sweeps - 1`` LiDAR messages are moved into the current LiDAR
   frame with the ego motion (world → base at both stamps) and get their time lag in seconds as
   the fifth point dimension.  Without a world frame on ``/tf`` the vehicle is assumed static
   between sweeps (flag ``ego_motion_unknown``).
4. A LiDAR message whose payload is corrupt still yields a frame (``points`` is ``None``, flag
   ``lidar_corrupt``), so no input frame is silently dropped.  When the log ends in a read error
   the frames still waiting for images are completed with what arrived (flag ``log_truncated``).

Times are integer nanoseconds; points are metres in the LiDAR frame (x forward, y left, z up).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from bev_ddp.data.nuscenes import SWEEP_MIN_RADIUS
from bev_ddp.errors import InputError
from bev_ddp.replay.events import (
    CameraInfoMessage,
    CameraMessage,
    CorruptMessage,
    Event,
    LidarMessage,
    LogError,
    TransformMessage,
)
from bev_ddp.replay.topics import CAMERA_NAMES
from bev_ddp.replay.transforms import TransformTree


@dataclass
class SyncSettings:
    """How frames are assembled (see the module docstring).

    Attributes:
        tolerance_ns: largest |camera stamp − LiDAR stamp| accepted.
        num_sweeps: LiDAR sweeps per frame, the current one included.
        arrival_slack_ns: how long after ``stamp + tolerance`` an image may still be recorded.
        sweep_min_range_m: points of *earlier* sweeps closer than this to the sensor (x/y) are
            dropped (they hit the ego vehicle), as the dataset does.
        base_frame / world_frame: ego vehicle frame and a frame fixed in the world on ``/tf``.
        lidar_frame: overrides the LiDAR messages' frame id when not empty.
    """

    tolerance_ns: int = 50_000_000
    num_sweeps: int = 10
    arrival_slack_ns: int = 500_000_000
    sweep_min_range_m: float = SWEEP_MIN_RADIUS
    base_frame: str = "base_link"
    world_frame: str = "map"
    lidar_frame: str = ""


@dataclass
class SensorFrame:
    """Everything the model needs for one LiDAR sweep, before image preprocessing.

    Attributes:
        index: position of the LiDAR message in the log (0-based).
        stamp_ns: LiDAR stamp.
        points: float32 [N, 5] x, y, z (m, LiDAR frame), intensity, time lag (s); ``None`` when
            the LiDAR payload was corrupt.
        images / image_stamps_ns: per camera name, uint8 [H, W, 3] RGB and its stamp, or ``None``.
        image_sizes: per camera, (H, W) of the image (of its CameraInfo when the image is missing).
        intrinsics: per camera, float64 [3, 3] (pixels of the recorded image) or ``None``.
        camera2lidar / camera2ego: per camera, float64 [4, 4] or ``None``; known also for a camera
            without an image this frame (taken at the LiDAR stamp then).
        lidar2ego: float64 [4, 4] (identity with flag ``lidar_no_base_tf`` when unknown).
        flags: what was missing or degraded; empty for a complete frame.
        meta: source ids (e.g. nuScenes tokens) and the camera time offsets (ms).
        placement: (parent, child, child → parent float64 [4, 4]) at the LiDAR stamp that place
            the LiDAR frame in the world: world → base (when the ego pose is known) and base →
            LiDAR (when the mount is known); what the replay output publishes on ``/tf``.
    """

    index: int
    stamp_ns: int
    lidar_frame: str
    points: np.ndarray | None
    sweeps_used: int
    images: dict[str, np.ndarray | None]
    image_stamps_ns: dict[str, int | None]
    image_sizes: dict[str, tuple[int, int] | None]
    intrinsics: dict[str, np.ndarray | None]
    camera2lidar: dict[str, np.ndarray | None]
    camera2ego: dict[str, np.ndarray | None]
    lidar2ego: np.ndarray
    flags: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    placement: list[tuple[str, str, np.ndarray]] = field(default_factory=list)

    @property
    def camera_valid(self) -> dict[str, bool]:
        return {
            name: self.images[name] is not None
            and self.intrinsics[name] is not None
            and self.camera2lidar[name] is not None
            for name in CAMERA_NAMES
        }


@dataclass
class _Pending:
    index: int
    lidar: LidarMessage
    history: list[LidarMessage]  # earlier sweeps, most recent first
    stamp_not_increasing: bool = False  # stamped at or before an earlier sweep (a clock jump, a re-sorted log)


class FrameAssembler:
    """Turns an ordered event stream into :class:`SensorFrame` s, one per LiDAR message.

    Args:
        settings: synchronisation settings.
        camera_frames: optional camera name → frame id (overrides the images' header frame ids).
    """

    def __init__(self, *, settings: SyncSettings, camera_frames: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.camera_frames = {k: v for k, v in (camera_frames or {}).items() if v}
        self.tree = TransformTree()
        self.log_error: str | None = None  # set when the log ended in a read error
        self._images: dict[str, deque] = {name: deque() for name in CAMERA_NAMES}
        self._last_image_stamp: dict[str, int] = {}
        self._info: dict[str, CameraInfoMessage] = {}
        self._camera_frame_ids: dict[str, str] = {}
        self._clock_offset: int | None = None  # receive_ns - stamp_ns of the first sensor message
        self._history: deque[LidarMessage] = deque(maxlen=max(settings.num_sweeps - 1, 0))
        self._pending: deque[_Pending] = deque()
        self._lidar_count = 0
        self._latest_lidar_stamp: int | None = None
        self._newest_lidar_stamp: int | None = None  # the largest decoded LiDAR stamp so far

    # -- event intake -------------------------------------------------------------------------
    def frames(self, events: Iterable[Event]) -> Iterator[SensorFrame]:
        """Consume ``events`` (ordered by ``receive_ns``) and yield frames in LiDAR order."""
        for event in events:
            if isinstance(event, LogError):
                self.log_error = event.error
                break
            self._note_clock(event)
            self._take(event)
            yield from self._ready(event)
        while self._pending:
            frame = self._finish(self._pending.popleft())
            if self.log_error is not None:
                frame.flags.append("log_truncated")  # later images of this frame may be lost
            yield frame

    def _take(self, event: Event) -> None:
        if isinstance(event, TransformMessage):
            if event.static:
                self.tree.add_static(event.parent, event.child, event.child_to_parent)
            else:
                self.tree.add(event.parent, event.child, event.stamp_ns, event.child_to_parent)
        elif isinstance(event, CameraInfoMessage):
            self._info[event.camera] = event
        elif isinstance(event, CameraMessage):
            self._images[event.camera].append(event)
            if event.frame_id:
                self._camera_frame_ids[event.camera] = event.frame_id
            self._last_image_stamp[event.camera] = max(self._last_image_stamp.get(event.camera, event.stamp_ns), event.stamp_ns)
            self._prune_images()
        elif isinstance(event, CorruptMessage):
            if event.sensor == "lidar":
                frame_id = self._history[-1].frame_id if self._history else ""
                stamp = event.receive_ns - (self._clock_offset or 0)  # its own stamp is unreadable
                bad = LidarMessage(stamp_ns=stamp, receive_ns=event.receive_ns, frame_id=frame_id,
                                   points=None, error=event.error)
                self._add_lidar(bad)
            elif event.sensor in self._images:
                self._images[event.sensor].append(
                    CorruptMessage(topic=event.topic, sensor=event.sensor, error=event.error,
                                   receive_ns=event.receive_ns - (self._clock_offset or 0)))
        elif isinstance(event, LidarMessage):
            self._add_lidar(event)

    def _add_lidar(self, lidar: LidarMessage) -> None:
        backwards = lidar.points is not None and self._newest_lidar_stamp is not None \
            and lidar.stamp_ns <= self._newest_lidar_stamp
        self._pending.append(_Pending(index=self._lidar_count, lidar=lidar, history=list(self._history)[::-1],
                                      stamp_not_increasing=backwards))
        self._lidar_count += 1
        if lidar.points is not None:
            self._history.append(lidar)
            self._latest_lidar_stamp = lidar.stamp_ns
            self._newest_lidar_stamp = max(lidar.stamp_ns, self._newest_lidar_stamp or lidar.stamp_ns)

    def _prune_images(self) -> None:
        """Forget images no current or future LiDAR sweep can use (keep the newest of each camera).

        Before the first LiDAR sweep, images older than the arrival slack are dropped, so a log
        that starts with a long stretch of camera data does not fill the memory.
        """
        s = self.settings
        oldest = self._pending[0].lidar.stamp_ns if self._pending else self._latest_lidar_stamp
        for name, buffer in self._images.items():
            if oldest is not None:
                horizon = oldest - s.tolerance_ns
            elif name in self._last_image_stamp:
                horizon = self._last_image_stamp[name] - s.tolerance_ns - s.arrival_slack_ns
            else:
                continue
            while len(buffer) > 1 and _stamp(buffer[0]) < horizon:
                buffer.popleft()

    def _note_clock(self, event: Event) -> None:
        """Offset of the recording clock from the sensor clock (logs may stamp with another clock)."""
        if self._clock_offset is None and isinstance(event, (LidarMessage, CameraMessage)):
            self._clock_offset = event.receive_ns - event.stamp_ns

    def _ready(self, event: Event) -> Iterator[SensorFrame]:
        receive = getattr(event, "receive_ns", None)
        now = None if receive is None or self._clock_offset is None else receive - self._clock_offset
        while self._pending:
            head = self._pending[0]
            window_end = head.lidar.stamp_ns + self.settings.tolerance_ns
            cameras_past = all(self._last_image_stamp.get(name, -1) > window_end for name in CAMERA_NAMES)
            log_past = now is not None and now > window_end + self.settings.arrival_slack_ns
            if not (cameras_past or log_past):
                return
            yield self._finish(self._pending.popleft())
            self._prune_images()

    # -- frame assembly -----------------------------------------------------------------------
    def _finish(self, pending: _Pending) -> SensorFrame:
        lidar = pending.lidar
        s = self.settings
        flags: list[str] = []
        meta = dict(lidar.meta)
        lidar_frame = s.lidar_frame or lidar.frame_id
        t = lidar.stamp_ns

        lidar2ego = self.tree.lookup(s.base_frame, lidar_frame, t) if lidar_frame else None
        placement = []
        ego2world = self.tree.lookup(s.world_frame, s.base_frame, t) if s.world_frame else None
        if ego2world is not None:
            placement.append((s.world_frame, s.base_frame, ego2world))
        if lidar2ego is None:
            flags.append("lidar_no_base_tf")
            lidar2ego = np.eye(4)
        elif lidar_frame != s.base_frame:
            placement.append((s.base_frame, lidar_frame, lidar2ego))

        images: dict[str, np.ndarray | None] = {}
        image_stamps: dict[str, int | None] = {}
        image_sizes: dict[str, tuple[int, int] | None] = {}
        intrinsics: dict[str, np.ndarray | None] = {}
        camera2lidar: dict[str, np.ndarray | None] = {}
        camera2ego: dict[str, np.ndarray | None] = {}
        offsets_ms: dict[str, float | None] = {}
        for name in CAMERA_NAMES:
            msg = min(self._images[name], key=lambda m: abs(_stamp(m) - t), default=None)
            offsets_ms[name] = None if msg is None else (_stamp(msg) - t) / 1e6
            image, stamp = None, None
            if msg is None or abs(_stamp(msg) - t) > s.tolerance_ns:
                flags.append(f"camera_missing:{name}")
            elif isinstance(msg, CorruptMessage):
                flags.append(f"camera_corrupt:{name}")
            else:
                try:
                    image, stamp = msg.decode(), msg.stamp_ns
                except InputError as exc:
                    flags.append(f"camera_corrupt:{name}")
                    meta.setdefault("errors", []).append(str(exc))
            images[name], image_stamps[name] = image, stamp
            # calibration, also for a camera without an image this frame (as the dataset keeps it)
            info = self._info.get(name)
            cam_frame = self.camera_frames.get(name) or self._camera_frame_ids.get(name, "")
            at = t if stamp is None else stamp
            image_sizes[name] = tuple(image.shape[:2]) if image is not None else (info.size if info else None)
            intrinsics[name] = None if info is None else self._scaled_intrinsics(info, image_sizes[name])
            camera2lidar[name] = self._between(lidar_frame, t, cam_frame, at) if lidar_frame and cam_frame else None
            camera2ego[name] = self.tree.lookup(s.base_frame, cam_frame, at) if cam_frame else None
            if image is not None and info is None:
                flags.append(f"camera_no_info:{name}")
            if image is not None and camera2lidar[name] is None:
                flags.append(f"camera_no_tf:{name}")
        meta["camera_offsets_ms"] = offsets_ms

        points = None
        sweeps_used = 0
        if lidar.points is None:
            flags.insert(0, "lidar_corrupt")
            meta.setdefault("errors", []).append(lidar.error or "LiDAR payload could not be decoded")
        else:
            points, sweeps_used, static = self._accumulate(lidar, lidar_frame, pending.history)
            if static:
                flags.append("ego_motion_unknown")
            if len(lidar.points) == 0:
                flags.append("lidar_empty")
        if pending.stamp_not_increasing:
            flags.append("lidar_stamp_not_increasing")
        return SensorFrame(
            index=pending.index,
            stamp_ns=t,
            lidar_frame=lidar_frame,
            points=points,
            sweeps_used=sweeps_used,
            images=images,
            image_stamps_ns=image_stamps,
            image_sizes=image_sizes,
            intrinsics=intrinsics,
            camera2lidar=camera2lidar,
            camera2ego=camera2ego,
            lidar2ego=lidar2ego,
            flags=flags,
            meta=meta,
            placement=placement,
        )

    def _scaled_intrinsics(self, info: CameraInfoMessage, image_hw: tuple[int, int] | None) -> np.ndarray:
        """Intrinsics for the image as decoded (CameraInfo may describe another resolution)."""
        k = info.intrinsics.copy()
        h, w = info.size
        if image_hw is not None and h > 0 and w > 0 and (h, w) != tuple(image_hw):
            k[0] *= image_hw[1] / w
            k[1] *= image_hw[0] / h
        return k

    def _between(self, target: str, target_ns: int, source: str, source_ns: int) -> np.ndarray | None:
        """``source`` at ``source_ns`` → ``target`` at ``target_ns`` through the world frame
        (falls back to one common stamp when the world frame is not on the tree)."""
        world = self.settings.world_frame
        if world and self.tree.has_frame(world):
            world_from_source = self.tree.lookup(world, source, source_ns)
            target_from_world = self.tree.lookup(target, world, target_ns)
            if world_from_source is not None and target_from_world is not None:
                return target_from_world @ world_from_source
        return self.tree.lookup(target, source, target_ns)

    def _accumulate(
        self, lidar: LidarMessage, lidar_frame: str, history: list[LidarMessage]
    ) -> tuple[np.ndarray, int, bool]:
        """Current sweep + earlier sweeps in the current LiDAR frame → float32 [N, 5], count, static?"""
        s = self.settings
        current = np.concatenate([lidar.points, np.zeros((len(lidar.points), 1), np.float32)], axis=1)  # [N, 5]
        parts = [current]
        static = False
        for sweep in history[: max(s.num_sweeps - 1, 0)]:
            sweep_frame = s.lidar_frame or sweep.frame_id
            world = s.world_frame
            motion = None
            if world and self.tree.has_frame(world):
                a = self.tree.lookup(world, sweep_frame, sweep.stamp_ns)
                b = self.tree.lookup(lidar_frame, world, lidar.stamp_ns)
                if a is not None and b is not None:
                    motion = b @ a
            if motion is None:
                static = True
                motion = self.tree.lookup(lidar_frame, sweep_frame, lidar.stamp_ns) if lidar_frame else None
                motion = np.eye(4) if motion is None else motion
            pts = sweep.points
            keep = np.hypot(pts[:, 0], pts[:, 1]) >= s.sweep_min_range_m
            pts = pts[keep]
            xyz = pts[:, :3].astype(np.float64) @ motion[:3, :3].T + motion[:3, 3]  # [M, 3]
            lag = np.full((len(pts), 1), (lidar.stamp_ns - sweep.stamp_ns) / 1e9)  # s
            parts.append(np.concatenate([xyz, pts[:, 3:4], lag], axis=1).astype(np.float32))  # [M, 5]
        return np.concatenate(parts, axis=0), len(parts), static


def _stamp(message: CameraMessage | CorruptMessage) -> int:
    """Sensor-clock stamp; a corrupt message carries its recording time mapped to the sensor clock."""
    return message.stamp_ns if isinstance(message, CameraMessage) else message.receive_ns
