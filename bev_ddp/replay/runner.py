"""The replay loop: log events → frames → samples → model → outputs.

One :class:`~bev_ddp.replay.outputs.FrameRecord` is written per input LiDAR frame, in log order.
Frames whose LiDAR payload is corrupt are written as skipped records (flag ``skipped``); frames
with missing cameras run degraded (``camera_valid`` False) and carry their flags.  SIGINT or SIGTERM
stops the loop after the current frame (a second one at once); a failed output write (a full disk)
stops it too; the outputs are closed either way (see :class:`~bev_ddp.replay.outputs.ReplayOutputs`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from tqdm import tqdm

from bev_ddp.bev.model import DegradedInputWarning
from bev_ddp.data.structures import collate_samples
from bev_ddp.engine.data import move_to_device
from bev_ddp.engine.interrupt import StopRequest
from bev_ddp.replay.controller import StepController
from bev_ddp.replay.events import Event
from bev_ddp.replay.outputs import FrameRecord, ReplayOutputs
from bev_ddp.replay.sync import FrameAssembler, SensorFrame

OCCUPIED_THRESHOLD = 0.5


class PredictingModel(Protocol):
    """What the replay needs of a model (``BEVFusionModel`` has it)."""

    def predict(self, batch: dict[str, Any], steps: list[int], seed: int) -> dict[int, Any]: ...


class SampleBuilder(Protocol):
    def __call__(self, frame: SensorFrame) -> dict[str, Any]: ...


FrameHook = Callable[[SensorFrame, FrameRecord, Any], None]


@dataclass
class ReplayResult:
    """Totals of one replay run."""

    frames: int
    predicted: int
    skipped: int
    degraded: int
    interrupted: bool
    log_error: str | None
    seconds: float
    frames_per_s: float
    mean_latency_ms: float | None
    out_dir: str
    signum: int | None = None  # the signal that stopped the run (SIGINT / SIGTERM)
    output_error: str | None = None  # a write that failed (e.g. a full disk); the outputs end before it
    flag_counts: dict[str, int] = field(default_factory=dict)  # frames per flag (``camera_missing:CAM_X`` → ``camera_missing``)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def replay(
    events: Iterable[Event],
    *,
    assembler: FrameAssembler,
    build_sample: SampleBuilder,
    model: PredictingModel,
    outputs: ReplayOutputs,
    controller: StepController,
    class_names: list[str],
    seed: int = 0,
    device: torch.device | str = "cpu",
    max_frames: int | None = None,
    total: int | None = None,
    progress: bool = True,
    on_frame: FrameHook | None = None,
) -> ReplayResult:
    """Run the model on every LiDAR frame of ``events`` and write the outputs.

    Args:
        events: the log's event stream (from a source's ``events()``).
        assembler: builds frames around LiDAR messages.
        build_sample: frame → sample dict (as the dataset yields it).
        model: ``predict(batch, steps=[k], seed=seed)`` → ``{k: BEVPrediction}``.
        outputs: open :class:`ReplayOutputs` (the caller's ``with`` closes it).
        controller: picks the sampling steps of each frame.
        seed: sampling seed used for every frame (same frame + seed → same prediction).
        max_frames: stop after this many frames.
        total: number of LiDAR frames for the progress bar, if known.
        on_frame: called after each frame with (frame, record, prediction or ``None``).
    """
    device = torch.device(device)
    frames = predicted = skipped = degraded = 0
    latencies: list[float] = []
    interrupted = False
    output_error: str | None = None
    flag_counts: dict[str, int] = {}
    start = time.perf_counter()
    stream = assembler.frames(events)
    bar = tqdm(total=total if max_frames is None else min(total or max_frames, max_frames),
               unit="frame", disable=not progress, dynamic_ncols=True)
    stop = StopRequest()
    try:
        with stop, contextlib.closing(stream), warnings.catch_warnings():
            warnings.simplefilter("ignore", DegradedInputWarning)  # each record's flags say what was missing
            for frame in stream:
                if max_frames is not None and frames >= max_frames:
                    break
                record, prediction = _run_frame(frame, build_sample, model, controller, class_names, seed, device)
                try:  # a record is written and counted whole, or not at all (a signal only sets stop's flag)
                    outputs.write(record, frame.lidar_frame,
                                  None if prediction is None else prediction.probs[0].float().cpu().numpy(),
                                  None if prediction is None else prediction.uncertainty[0].float().cpu().numpy(),
                                  transforms=frame.placement)
                except OSError as exc:
                    output_error = f"{exc.strerror or exc}: {exc.filename or outputs.out_dir}"
                    break
                frames += 1
                for flag in {f.split(":")[0] for f in record.flags}:
                    flag_counts[flag] = flag_counts.get(flag, 0) + 1
                if prediction is None:
                    skipped += 1
                else:
                    predicted += 1
                    latencies.append(record.latency_ms or 0.0)
                    degraded += int(any(f != "over_budget" for f in record.flags))
                bar.update(1)
                bar.set_postfix(steps=record.steps, ms=None if record.latency_ms is None else round(record.latency_ms))
                if on_frame is not None:
                    on_frame(frame, record, prediction)
                if stop.requested:
                    break
    except KeyboardInterrupt as exc:  # on_frame raised it, or a second signal
        interrupted = True
        stop.signum = stop.signum or getattr(exc, "signum", int(signal.SIGINT))
    finally:
        interrupted = interrupted or stop.requested
        bar.close()
        seconds = time.perf_counter() - start
        result = ReplayResult(
            frames=frames,
            predicted=predicted,
            skipped=skipped,
            degraded=degraded,
            interrupted=interrupted,
            log_error=assembler.log_error,
            seconds=seconds,
            frames_per_s=frames / seconds if seconds > 0 else 0.0,
            mean_latency_ms=float(np.mean(latencies)) if latencies else None,
            out_dir=str(outputs.out_dir),
            signum=stop.signum if interrupted else None,
            output_error=output_error,
            flag_counts=dict(sorted(flag_counts.items())),
        )
        outputs.write_summary(result.to_json())
    return result


def non_finite_geometry(sample: dict[str, Any]) -> list[str]:
    """Names of the sample's camera geometry matrices (``camera2lidar``, ...) that hold NaN or inf."""
    geometry = sample.get("geometry")
    if geometry is None:
        return []
    return [f.name for f in dataclasses.fields(geometry)
            if isinstance(getattr(geometry, f.name), torch.Tensor) and not torch.isfinite(getattr(geometry, f.name)).all()]


def _run_frame(
    frame: SensorFrame,
    build_sample: SampleBuilder,
    model: PredictingModel,
    controller: StepController,
    class_names: list[str],
    seed: int,
    device: torch.device,
) -> tuple[FrameRecord, Any]:
    record = FrameRecord(
        index=frame.index,
        stamp_ns=frame.stamp_ns,
        flags=list(frame.flags),
        camera_valid=frame.camera_valid,
        sweeps=frame.sweeps_used,
        meta={k: v for k, v in frame.meta.items()},
    )
    if frame.points is None:
        record.flags.append("skipped")
        return record, None
    steps = controller.choose()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    sample = build_sample(frame)
    bad = non_finite_geometry(sample)
    if bad:  # e.g. a NaN translation in /tf: the model must not see it
        record.flags += [f"{name}_not_finite" for name in bad] + ["skipped"]
        return record, None
    batch = move_to_device(collate_samples([sample]), device)
    with torch.inference_mode():
        prediction = model.predict(batch, steps=[steps], seed=seed)[steps]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    latency_ms = (time.perf_counter() - t0) * 1e3
    controller.observe(steps, latency_ms)
    if controller.budget_ms is not None and latency_ms > controller.budget_ms:
        record.flags.append("over_budget")
    probs = prediction.probs[0].float()  # [K, X, Y]
    record.steps = steps
    record.latency_ms = latency_ms
    record.occupied_fraction = {
        name: float((probs[k] >= OCCUPIED_THRESHOLD).float().mean()) for k, name in enumerate(class_names)
    }
    record.mean_uncertainty = float(prediction.uncertainty[0].float().mean())
    return record, prediction

