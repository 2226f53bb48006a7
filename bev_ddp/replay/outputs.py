"""Everything a replay writes: MCAP for Foxglove, a JSONL line per frame, optional PNG / MP4.

Output folder layout::

    replay.mcap      /bev/probabilities  foxglove.Grid, 6 uint8 fields (probability × 255)
                     /bev/uncertainty    foxglove.Grid, 1 uint8 field (uncertainty × 255)
                     /bev/argmax         foxglove.CompressedImage (PNG, class colours, heading up)
                     /bev/frame          bev_ddp.ReplayFrame (latency, steps, flags, occupancy)
                     /tf                 foxglove.FrameTransform (protobuf): world → base → LiDAR
    frames.jsonl     one JSON object per input LiDAR frame (same content as /bev/frame)
    summary.json     totals: frames, frames/s, interrupted, log error
    frames/*.png     optional: argmax | uncertainty panels
    replay.mp4       optional: the same panels as a video (OpenCV's MP4 writer)

Every channel is stamped with the LiDAR stamp, so the output lines up with the input log when
both are opened in Foxglove.  :class:`ReplayOutputs` is a context manager: leaving it — normally,
by an exception or by Ctrl-C — finishes the MCAP (summary and index written), so the file is
valid and holds every frame processed so far.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.writer import Writer as McapWriter

from bev_ddp.errors import InputError
from bev_ddp.replay import foxglove, render


@dataclass(frozen=True)
class GridSpec:
    """Placement of the BEV grid in the LiDAR frame: ``xbound``/``ybound`` = (min, max, cell) m."""

    xbound: tuple[float, float, float] = (-50.0, 50.0, 0.5)
    ybound: tuple[float, float, float] = (-50.0, 50.0, 0.5)


@dataclass
class FrameRecord:
    """Summary of one replayed LiDAR frame (one per input frame, also for skipped ones).

    Attributes:
        index: position of the LiDAR message in the log; stamp_ns: its stamp.
        flags: degradations (see :mod:`bev_ddp.replay.sync`); ``skipped`` when no prediction.
        latency_ms: wall time of preprocessing + model (``None`` when skipped).
        steps: DDP sampling steps used.
        occupied_fraction: per class, fraction of cells with probability ≥ 0.5.
        mean_uncertainty: mean of the uncertainty map.
    """

    index: int
    stamp_ns: int
    flags: list[str]
    camera_valid: dict[str, bool]
    sweeps: int
    steps: int | None = None
    latency_ms: float | None = None
    occupied_fraction: dict[str, float] = field(default_factory=dict)
    mean_uncertainty: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["timestamp"] = foxglove.time_fields(self.stamp_ns)
        return out


class ReplayOutputs:
    """Writers of one replay run (see the module docstring).

    Args:
        out_dir: created if missing; existing replay files in it are overwritten (PNG frames of an
            earlier, longer run are not removed).
        class_names: names of the C probability channels.
        grid: where the BEV grid lies in the LiDAR frame.
        png: also write ``frames/<index>.png``; mp4: also write ``replay.mp4`` (``fps`` frames/s).
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        class_names: list[str],
        grid: GridSpec,
        png: bool = False,
        mp4: bool = False,
        fps: float = 10.0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.class_names = list(class_names)
        self.grid = grid
        self.png = png
        self.mp4 = mp4
        self.fps = fps
        self.mcap_path = self.out_dir / "replay.mcap"
        self.jsonl_path = self.out_dir / "frames.jsonl"
        self.summary_path = self.out_dir / "summary.json"
        self._video = None
        self._mcap_file = None
        self._jsonl = None

    def __enter__(self) -> "ReplayOutputs":
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._mcap_file = open(self.mcap_path, "wb")
        except OSError as exc:
            raise InputError(f"cannot write replay outputs to {self.out_dir}: {exc}") from exc
        self._writer = McapWriter(self._mcap_file)
        self._writer.start(profile="", library="bev_ddp replay")
        channels = {
            "/bev/probabilities": foxglove.GRID_SCHEMA,
            "/bev/uncertainty": foxglove.GRID_SCHEMA,
            "/bev/argmax": foxglove.COMPRESSED_IMAGE_SCHEMA,
            "/bev/frame": foxglove.REPLAY_FRAME_SCHEMA,
        }
        schema_ids: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        for topic, schema in channels.items():
            name = schema["title"]
            if name not in schema_ids:
                schema_ids[name] = self._writer.register_schema(
                    name=name, encoding="jsonschema", data=json.dumps(schema).encode("utf-8")
                )
            self._channels[topic] = self._writer.register_channel(
                topic=topic, message_encoding="json", schema_id=schema_ids[name]
            )
        from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
        from mcap_protobuf.schema import register_schema

        self._channels["/tf"] = self._writer.register_channel(
            topic="/tf", message_encoding="protobuf", schema_id=register_schema(self._writer, FrameTransform))
        self._jsonl = open(self.jsonl_path, "w", encoding="utf-8")
        if self.png:
            (self.out_dir / "frames").mkdir(exist_ok=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Finish the MCAP and close every file (safe to call twice)."""
        if self._mcap_file is not None:
            try:
                self._writer.finish()
            finally:
                self._mcap_file.close()
                self._mcap_file = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._video is not None:
            self._video.release()
            self._video = None

    def _publish(self, topic: str, stamp_ns: int, message: dict) -> None:
        self._writer.add_message(
            channel_id=self._channels[topic], log_time=stamp_ns, publish_time=stamp_ns,
            data=foxglove.encode_json(message),
        )

    def write(self, record: FrameRecord, frame_id: str, probs: np.ndarray | None, uncertainty: np.ndarray | None,
              transforms: list[tuple[str, str, np.ndarray]] = ()) -> None:
        """Write one frame.

        Args:
            record: the frame's summary (always written).
            frame_id: the LiDAR frame the BEV grid lies in.
            probs: float [C, X, Y] probabilities in [0, 1], ``None`` for a skipped frame.
            uncertainty: float [X, Y] in [0, 1], ``None`` for a skipped frame.
            transforms: (parent, child, child → parent [4, 4]) at the frame's stamp, published on ``/tf``.
        """
        t = record.stamp_ns
        for parent, child, matrix in transforms:
            self._writer.add_message(channel_id=self._channels["/tf"], log_time=t, publish_time=t,
                                     data=foxglove.frame_transform(parent, child, t, matrix).SerializeToString())
        if probs is not None and uncertainty is not None:
            origin = (self.grid.xbound[0], self.grid.ybound[0])
            cell = (self.grid.xbound[2], self.grid.ybound[2])
            self._publish("/bev/probabilities", t, foxglove.grid_message(
                t, frame_id, quantise(probs), self.class_names, origin_xy=origin, cell_size=cell))
            self._publish("/bev/uncertainty", t, foxglove.grid_message(
                t, frame_id, quantise(uncertainty[None]), ["uncertainty"], origin_xy=origin, cell_size=cell))
            labels = render.argmax_labels(probs)
            self._publish("/bev/argmax", t, foxglove.compressed_image_message(
                t, frame_id, render.encode_png(render.colourise_labels(labels))))
            if self.png or self.mp4:
                self._write_panel(record.index, render.panel(probs, uncertainty))
        payload = record.to_json()
        self._publish("/bev/frame", t, {k: payload[k] for k in foxglove.REPLAY_FRAME_SCHEMA["properties"]})
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(payload) + "\n")
        self._jsonl.flush()

    def _write_panel(self, index: int, image: np.ndarray) -> None:
        if self.png:
            (self.out_dir / "frames" / f"{index:06d}.png").write_bytes(render.encode_png(image))
        if self.mp4:
            import cv2  # OpenCV's MP4 writer; imported only when a video is asked for

            if self._video is None:
                height, width = image.shape[:2]
                self._video = cv2.VideoWriter(
                    str(self.out_dir / "replay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height)
                )
                if not self._video.isOpened():
                    raise RuntimeError(f"OpenCV cannot write MP4 video to {self.out_dir / 'replay.mp4'}")
            self._video.write(np.ascontiguousarray(image[:, :, ::-1]))  # RGB -> BGR

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def quantise(values: np.ndarray) -> np.ndarray:
    """float values in [0, 1] → uint8 (× 255, rounded); NaN → 0."""
    return (np.nan_to_num(np.clip(values, 0.0, 1.0)) * 255.0).round().astype(np.uint8)
