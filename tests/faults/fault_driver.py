"""``bev-ddp`` in a child process, with a slow variant of the engine's toy task registered as ``toy``.

Run as ``python fault_driver.py COMMAND ...``.  Every forward / predict call of the toy model
touches ``$FAULTS_MARKER`` (so a test knows the work has begun) and sleeps ``$FAULTS_SLEEP``
seconds (so a signal lands mid-run).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS / "engine", TESTS / "replay"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import engine_toy_task as toy  # noqa: E402


def _tick() -> None:
    marker = os.environ.get("FAULTS_MARKER")
    if marker:
        Path(marker).touch()
    time.sleep(float(os.environ.get("FAULTS_SLEEP", "0")))


class SlowToyModel(toy.ToyModel):
    def forward(self, batch, self_aligned: bool = False):
        _tick()
        return super().forward(batch, self_aligned)

    def predict(self, batch, steps, seed: int = 0):
        _tick()
        return super().predict(batch, steps, seed)


class SlowToyTask(toy.ToyTask):
    def build_model(self, cfg):
        return SlowToyModel(channels=cfg.data.channels, cfg=cfg.model)


TASK = SlowToyTask()


def register() -> None:
    """Make ``task: toy`` configs resolve to :data:`TASK` (in this process)."""
    from bev_ddp.engine import task as task_module

    task_module.TASK_MODULES["toy"] = "fault_driver"


if __name__ == "__main__":
    register()
    from bev_ddp.cli import main

    sys.exit(main(sys.argv[1:]))
