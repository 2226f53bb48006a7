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
by an exception, by SIGINT or SIGTERM — finishes the MCAP (summary and index written), so the
file is valid and holds every frame processed so far.

Nothing is lost or left unreadable: ``replay.mcap`` and ``frames.jsonl`` are written under
temporary names (``.replay.mcap.tmp``, ``.frames.jsonl.tmp``) and renamed when the run ends, so a
killed run (SIGKILL) leaves the previous complete outputs (its temporaries are removed by the next
run).  Each frame ends a chunk; when a write fails (ENOSPC), :meth:`ReplayOutputs.write` cuts the
files back to the last complete frame, closes the MCAP without a summary (readers read it
linearly) and raises :class:`OutputWriteError`; ``summary.json`` is written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.data_stream import RecordBuilder
from mcap.records import DataEnd, Footer
from mcap.writer import MCAP0_MAGIC
from mcap.writer import Writer as McapWriter

from bev_ddp.output_files import probe_output_dir, remove_stale_tmp, write_bytes_atomic, write_text_atomic
from bev_ddp.replay import foxglove, render


class OutputWriteError(OSError):
    """Writing a frame failed (e.g. ENOSPC); the files were cut back to the last complete frame."""


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
        self._mcap_file: _Sink | None = None
        self._jsonl: _Sink | None = None
        self.frames_written = 0
        self.write_error: OSError | None = None

    def __enter__(self) -> "ReplayOutputs":
        probe_output_dir(self.out_dir, what="replay output folder")  # OutputError (exit 2) before any work
        remove_stale_tmp(self.out_dir)
        self._mcap_file = _Sink(_tmp_name(self.mcap_path))
        self._jsonl = _Sink(_tmp_name(self.jsonl_path))
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
        self._writer.flush()
        self._mcap_file.mark()
        if self.png:
            (self.out_dir / "frames").mkdir(exist_ok=True)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Finish the MCAP, close every file and rename them to their final names (safe to call twice)."""
        if self._mcap_file is not None:
            mcap, self._mcap_file = self._mcap_file, None
            try:
                if self.write_error is None:
                    self._writer.finish()
                    mcap.close(self.mcap_path)
                else:
                    mcap.close_recovered(self.mcap_path, _MCAP_TAIL)
            except OSError as exc:  # the summary did not fit: keep the frames, without a summary
                self.write_error = self.write_error or exc
                mcap.close_recovered(self.mcap_path, _MCAP_TAIL)
        if self._jsonl is not None:
            jsonl, self._jsonl = self._jsonl, None
            try:
                if self.write_error is None:
                    jsonl.close(self.jsonl_path)
                else:
                    jsonl.close_recovered(self.jsonl_path, b"")
            except OSError as exc:
                self.write_error = self.write_error or exc
                jsonl.close_recovered(self.jsonl_path, b"")
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
        """Write one frame, whole or not at all.

        Args:
            record: the frame's summary (always written).
            frame_id: the LiDAR frame the BEV grid lies in.
            probs: float [C, X, Y] probabilities in [0, 1], ``None`` for a skipped frame.
            uncertainty: float [X, Y] in [0, 1], ``None`` for a skipped frame.
            transforms: (parent, child, child → parent [4, 4]) at the frame's stamp, published on ``/tf``.

        Raises:
            OutputWriteError: a write failed (full disk); the outputs hold the frames before this one.
        """
        if self.write_error is not None:
            raise OutputWriteError(self.write_error.errno, f"{self.write_error.strerror} (an earlier frame)")
        try:
            self._write_frame(record, frame_id, probs, uncertainty, transforms)
            self._writer.flush()  # the frame ends a chunk: a cut after it leaves whole records
            assert self._mcap_file is not None and self._jsonl is not None
            self._mcap_file.mark()
            self._jsonl.mark()
            self.frames_written += 1
        except OSError as exc:
            self.write_error = exc
            for sink in (self._mcap_file, self._jsonl):  # free the room the partial frame took (for summary.json)
                if sink is not None:
                    sink.cut_back()
            raise OutputWriteError(
                exc.errno, f"{exc.strerror or exc}; the outputs hold the {self.frames_written} frames written before it",
                str(exc.filename or self.out_dir)) from exc

    def _write_frame(self, record: FrameRecord, frame_id: str, probs: np.ndarray | None,
                     uncertainty: np.ndarray | None, transforms: list[tuple[str, str, np.ndarray]]) -> None:
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
        self._jsonl.write((json.dumps(payload) + "\n").encode("utf-8"))

    def _write_panel(self, index: int, image: np.ndarray) -> None:
        if self.png:
            write_bytes_atomic(self.out_dir / "frames" / f"{index:06d}.png", render.encode_png(image), fsync=False)
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

    def write_summary(self, summary: dict[str, Any]) -> bool:
        """Write ``summary.json`` atomically; False (and no file) when the disk is full."""
        try:
            write_text_atomic(self.summary_path, json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            self.write_error = self.write_error or exc
            return False
        return True


def quantise(values: np.ndarray) -> np.ndarray:
    """float values in [0, 1] → uint8 (× 255, rounded); NaN → 0."""
    return (np.nan_to_num(np.clip(values, 0.0, 1.0)) * 255.0).round().astype(np.uint8)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _mcap_tail() -> bytes:
    """DataEnd + Footer (no summary) + magic: what closes an MCAP cut after a complete chunk."""
    builder = RecordBuilder()
    DataEnd(0).write(builder)
    Footer(summary_start=0, summary_offset_start=0, summary_crc=0).write(builder)
    return builder.end() + MCAP0_MAGIC


_MCAP_TAIL = _mcap_tail()


class _Sink:
    """An unbuffered output file that remembers where its last complete frame ended.

    ``write`` goes straight to the file (no buffer that could flush half a record later); after a
    failed write, ``close_recovered`` cuts the file back to the last ``mark`` and appends ``tail``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb", buffering=0)
        self._pos = 0
        self._good = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if not written:
                raise OSError(28, os.strerror(28), str(self.path))
            self._pos += written
            view = view[written:]
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def mark(self) -> None:
        """Everything written so far forms complete frames."""
        self._good = self._pos

    def cut_back(self) -> None:
        """Drop what was written after the last ``mark`` (best effort)."""
        try:
            self._file.truncate(self._good)
            self._file.seek(self._good)
            self._pos = self._good
        except OSError:
            pass

    def close(self, final: Path) -> None:
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.path, final)

    def close_recovered(self, final: Path, tail: bytes) -> None:
        """Cut back to the last complete frame, append ``tail`` and rename; delete the file when even that fails."""
        try:
            self._file.truncate(self._good)
            self._file.seek(self._good)
            self._pos = self._good
            if self._good > 0:
                self.write(tail)
            self._file.close()
            if self._good > 0:
                os.replace(self.path, final)
            else:
                self.path.unlink(missing_ok=True)
        except OSError:
            self._file.close()
            self.path.unlink(missing_ok=True)
