"""Training logs: one JSON object per line (``log.jsonl``), TensorBoard (``tb/``), loss averaging.

At each evaluation :meth:`MetricLogger.log_evaluation` writes, per sampling step count ``s``:

* ``eval/steps<s>/<summary>`` (e.g. ``mIoU``, ``mIoU@0.50``) and ``eval/steps<s>/uncertainty_auroc``
  (how well the uncertainty map ranks wrong pixels above right ones);
* ``eval/steps<s>/<metric>/<class>``: per-class score (BEV: IoU at the best threshold, as BEVFusion
  reports it) and, for BEV, ``eval/steps<s>/IoU@0.50/<class>`` at the fixed threshold 0.5;
* ``eval/train_iter_time_s`` (seconds per training step over the last log window),
  ``eval/eval_time_s`` and ``eval/peak_memory_mib`` (CUDA peak allocated, else the process's peak RSS);
* the image ``eval/map_steps<s>``: ground truth | prediction | uncertainty of the first kept sample
  (BEV grids drawn with LiDAR x to the right and y up, as the report's ``maps.png``).

``log.jsonl`` gets the same numbers: one line of kind ``eval/steps<s>`` per step count, one of kind ``eval``.
"""
from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from bev_ddp.output_files import write_text_atomic


class MetricLogger:
    """Writes scalars to ``<work_dir>/log.jsonl`` and a TensorBoard event file in ``<work_dir>/tb``.

    Only the main rank should create one.  Records are appended, so a resumed run continues the
    same files; records of steps after ``start_step`` (written by a run killed after its last
    checkpoint) are dropped first, so no step appears twice.
    """

    def __init__(self, work_dir: str | Path, *, tensorboard: bool = True, start_step: int | None = None):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.work_dir / "log.jsonl"
        if start_step is not None:
            truncate_log(self.jsonl_path, start_step)
        self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        self._tb = None
        self._iter_time_s: float | None = None  # seconds per training step, last log window
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # heavy import, only when used

            self._tb = SummaryWriter(log_dir=str(self.work_dir / "tb"))

    def log(self, step: int, scalars: dict[str, float], *, prefix: str = "train",
            extra: dict[str, Any] | None = None) -> None:
        if prefix == "train" and scalars.get("it_per_s"):
            self._iter_time_s = 1.0 / float(scalars["it_per_s"])
        record = {"kind": prefix, "step": step, **{k: _clean(v) for k, v in scalars.items()}, **(extra or {})}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def log_evaluation(self, step: int, metrics: dict[str, Any], visuals: dict[str, np.ndarray] | None = None, *,
                       seconds: float | None = None) -> dict[str, float]:
        """Log an evaluation (see the module docstring): a JSONL line of kind ``eval/steps<s>`` per step
        count and one of kind ``eval`` (timing, memory); returns every scalar by its TensorBoard tag."""
        written: dict[str, float] = {}
        metric = str(metrics.get("metric", "score"))
        for steps, entry in metrics.get("steps", {}).items():
            scalars = dict(entry.get("summary", {}))
            scalars.update({f"{metric}/{name}": v for name, v in entry.get("per_class", {}).items()})
            table = entry.get("per_threshold", {})
            if 0.5 in table.get("thresholds", []):
                at = table["thresholds"].index(0.5)
                scalars.update({f"{metric}@0.50/{name}": v[at] for name, v in table.get("per_class", {}).items()})
            auroc = entry.get("uncertainty", {}).get("auroc")
            if auroc is not None:
                scalars["uncertainty_auroc"] = auroc
            scalars = {k: float(v) for k, v in scalars.items() if isinstance(v, (int, float))}
            self.log(step, scalars, prefix=f"eval/steps{steps}")
            written.update({f"eval/steps{steps}/{k}": v for k, v in scalars.items()})
        general = {"peak_memory_mib": peak_memory_mib()}
        if self._iter_time_s is not None:
            general["train_iter_time_s"] = self._iter_time_s
        if seconds is not None:
            general["eval_time_s"] = float(seconds)
        self.log(step, general, prefix="eval")
        written.update({f"eval/{k}": v for k, v in general.items()})
        if self._tb is not None and visuals:
            for steps in np.atleast_1d(visuals.get("steps", [])):
                image = map_image(visuals, int(steps))
                if image is not None:
                    self._tb.add_image(f"eval/map_steps{int(steps)}", image, step, dataformats="HWC")
            self._tb.flush()
        return written

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def truncate_log(path: Path, last_step: int) -> int:
    """Keep the records of ``path`` with ``step <= last_step`` (and drop a torn last line); returns how many were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", 0)) <= last_step
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(line + "\n" for line in kept))
    return dropped


class LossWindow:
    """Sums loss values between two log lines; ``flush`` returns the means and steps per second."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.start = time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def flush(self) -> tuple[dict[str, float], float]:
        elapsed = time.perf_counter() - self.start
        means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        rate = self.count / max(elapsed, 1e-9)
        self.sums, self.count, self.start = {}, 0, time.perf_counter()
        return means, rate


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def peak_memory_mib() -> float:
    """Peak memory of this process, MiB: CUDA peak allocated when CUDA is in use, else peak RSS."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# class colours of the map image (matplotlib's tab10 without grey, as the report's figures)
_PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                     [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207]], dtype=np.uint8)


def _classes_rgb(masks: np.ndarray) -> np.ndarray:
    """[K, H, W] bool → uint8 [H, W, 3]: classes painted in order over white."""
    rgb = np.full((*masks.shape[1:], 3), 255, dtype=np.uint8)
    for k in range(masks.shape[0]):
        rgb[masks[k]] = _PALETTE[k % len(_PALETTE)]
    return rgb


def _labels_rgb(labels: np.ndarray) -> np.ndarray:
    """[H, W] class ids (outside the palette or < 0: ignore, black) → uint8 [H, W, 3]."""
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = labels >= 0
    rgb[valid] = _PALETTE[labels[valid] % len(_PALETTE)]
    return rgb


def _scalar_rgb(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    import matplotlib

    lo = float(np.nanmin(values)) if lo is None else lo
    hi = float(np.nanmax(values)) if hi is None else hi
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return (matplotlib.colormaps["viridis"](np.nan_to_num(scaled))[..., :3] * 255).round().astype(np.uint8)


def map_image(visuals: dict[str, np.ndarray], steps: int, gap: int = 4) -> np.ndarray | None:
    """uint8 [H, 3·W + 2·gap, 3]: ground truth | prediction | uncertainty of the first kept sample.

    ``visuals`` as an evaluator's ``visuals()``: ``kind`` multilabel (``gt`` / ``probs_<s>``
    [N, K, X, Y], drawn at threshold 0.5), ``labels`` ([N, H, W] ids) or ``scalar``; optional
    ``uncertainty_<s>`` [N, H, W] in [0, 1] (an empty panel without it).  BEV grids ([X, Y], frame
    ``bev``) are drawn with x to the right and y up.
    """
    pred = visuals.get(f"probs_{steps}", visuals.get(f"pred_{steps}"))
    if "gt" not in visuals or pred is None:
        return None
    kind = str(visuals.get("kind", "multilabel"))
    bev = str(visuals.get("frame", "bev" if kind == "multilabel" else "image")) == "bev"

    def draw(array: np.ndarray, as_kind: str) -> np.ndarray:
        array = np.asarray(array, dtype=np.float32)
        if as_kind == "multilabel":
            rgb = _classes_rgb(array >= 0.5)
        elif as_kind == "labels":
            rgb = _labels_rgb(array.astype(np.int64))
        else:
            rgb = _scalar_rgb(array, 0.0, 1.0) if as_kind == "uncertainty" else _scalar_rgb(array)
        return np.ascontiguousarray(np.swapaxes(rgb, 0, 1)[::-1]) if bev else rgb  # [Y, X] rows: y up

    panels = [draw(visuals["gt"][0], kind), draw(pred[0], kind)]
    unc = visuals.get(f"uncertainty_{steps}")
    panels.append(draw(unc[0], "uncertainty") if unc is not None else np.full_like(panels[0], 255))
    spacer = np.full((panels[0].shape[0], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], spacer, panels[1], spacer, panels[2]], axis=1)
