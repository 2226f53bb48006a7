"""The contract between the generic train/eval engine and one task (BEV, seg, depth).

``bev-ddp train`` and ``bev-ddp eval`` read ``task:`` from the config and load the task module
from :data:`TASK_MODULES` (an explicit table, no registry).  Each task module exposes ``TASK``,
an object with the members of :class:`Task`.

Model contract (every task's model is an ``nn.Module``):

* ``model(batch) -> (preds, losses)``: training forward; ``losses`` is a dict of scalar tensors
  whose sum is optimised, ``preds`` may be ``None``.
* ``model.predict(batch, steps=[1, 3], seed=0) -> dict[int, Prediction]``: inference; the image /
  BEV encoder runs once and the DDP sampler runs once per requested step count.
* ``model.steps``: the step count ``predict`` samples when ``steps`` is None (the head's
  ``steps`` setting); a model without it counts as one deterministic pass.

Evaluator contract: ``reset()``, ``process(batch, preds)`` with ``preds`` as returned by
``predict``, ``evaluate() -> dict`` (JSON-serialisable metrics per step count, in the layout
:mod:`bev_ddp.report.writer` documents, so ``write_report`` can draw it).  Optionally
``visuals() -> dict[str, numpy.ndarray]``: the first samples' maps, saved by the evaluation loop as
``visuals.npz`` beside the report (see :func:`bev_ddp.report.plots.plot_maps` for the keys).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch.utils.data import Dataset

from bev_ddp.errors import ConfigError

TASK_MODULES: dict[str, str] = {
    "bev": "bev_ddp.bev.task",
    "seg": "bev_ddp.seg.task",
    "depth": "bev_ddp.depth.task",
}


class Evaluator(Protocol):
    def reset(self) -> None: ...

    def process(self, batch: dict[str, Any], preds: dict[int, Any]) -> None: ...

    def evaluate(self) -> dict[str, Any]: ...


class Task(Protocol):
    name: str
    schema: type  # config dataclass, see bev_ddp.config.load_config

    def build_model(self, cfg: Any) -> torch.nn.Module: ...

    def build_dataset(self, cfg: Any, split: str) -> Dataset: ...

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]: ...

    def build_evaluator(self, cfg: Any, steps: Sequence[int]) -> Evaluator: ...

    def write_report(self, metrics: dict[str, Any], out_dir: Path) -> list[Path]: ...


def get_task(name: str) -> Task:
    """Return the task object for ``name`` (``bev``, ``seg`` or ``depth``)."""
    if name not in TASK_MODULES:
        raise ConfigError(f"unknown task {name!r}; choose from {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK


def default_steps(model: torch.nn.Module) -> int:
    """The step count ``model.predict`` samples when none is asked for: ``model.steps`` (through a
    DistributedDataParallel wrapper); a model without it (no sampling) makes one deterministic pass."""
    inner = getattr(model, "module", model)
    return int(getattr(inner, "steps", 1))
