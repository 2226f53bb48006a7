"""Training logs: one JSON object per line (``log.jsonl``), TensorBoard scalars (``tb/``), loss averaging."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

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
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # heavy import, only when used

            self._tb = SummaryWriter(log_dir=str(self.work_dir / "tb"))

    def log(self, step: int, scalars: dict[str, float], *, prefix: str = "train",
            extra: dict[str, Any] | None = None) -> None:
        record = {"kind": prefix, "step": step, **{k: _clean(v) for k, v in scalars.items()}, **(extra or {})}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

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
