"""The evaluation loop: one pass over a split, every requested step count per batch.

``model.predict(batch, steps=[...], seed=...)`` runs the encoder once and the DDP sampler once
per step count; the task's evaluator accumulates every step count's predictions.  Evaluators
that define ``visuals()`` (first samples' maps, as numpy arrays) get them saved to
``<out_dir>/visuals.npz`` beside the report so ``bev-ddp report`` can redraw the figures.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from bev_ddp.comm import get_rank, get_world_size
from bev_ddp.diffusion.sampler import check_step_counts
from bev_ddp.engine.data import build_eval_loader, move_to_device
from bev_ddp.engine.interrupt import StopRequest
from bev_ddp.engine.task import Evaluator, Task, default_steps
from bev_ddp.errors import InputError
from bev_ddp.stop import StopRequested
from bev_ddp.output_files import write_bytes_atomic, write_text_atomic
from bev_ddp.report.writer import VISUALS_FILE


@dataclass
class EvalResult:
    """Metrics of one evaluation (as returned by the evaluator) and where its report went."""

    metrics: dict[str, Any]
    seconds: float
    visuals: dict[str, np.ndarray] = field(default_factory=dict)
    report_files: list[Path] = field(default_factory=list)
    interrupted: bool = False  # a SIGINT/SIGTERM stopped the pass: no metrics, no report
    batches: int = 0  # batches processed (on this rank)


def parse_steps(text: str) -> list[int]:
    """``"1,3,5"`` (``--steps``) -> ``[1, 3, 5]``, sorted; checked by :func:`check_step_counts`."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise InputError(f"steps must be comma-separated positive integers, got {text!r}") from exc
    return sorted(check_step_counts(steps))


def evaluation_steps(cfg: Any, model: torch.nn.Module) -> list[int]:
    """The step counts an evaluation reports when none are asked for: ``eval.steps`` when the config
    lists several to compare, else the model's own default (its head's ``steps``)."""
    if cfg.eval.get("steps"):
        return sorted(check_step_counts(list(cfg.eval.steps)))
    return [default_steps(model)]


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader: Any,
    evaluator: Evaluator,
    *,
    steps: Sequence[int],
    seed: int,
    device: torch.device,
    progress: bool = True,
    stop: StopRequest | None = None,
) -> EvalResult:
    """Run ``model.predict`` over ``loader`` and return the evaluator's metrics (all ranks).

    With ``stop`` (an active :class:`StopRequest`), a SIGINT/SIGTERM ends the pass before the next
    batch (the decision is all-reduced over ranks), or between two sampling steps of the current
    one (:mod:`bev_ddp.stop`), and the result is marked ``interrupted``.
    """
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    was_training = module.training
    module.eval()
    evaluator.reset()
    start = time.perf_counter()
    batches = 0
    try:
        bar = tqdm(loader, desc=f"eval steps {','.join(map(str, steps))}", unit="batch", disable=not progress, leave=False)
        for batch in bar:
            if stop is not None and _stop_on_any_rank(stop):
                bar.close()
                return EvalResult(metrics={}, seconds=time.perf_counter() - start, interrupted=True, batches=batches)
            batch = move_to_device(batch, device)
            try:
                preds = module.predict(batch, steps=list(steps), seed=seed)
            except StopRequested:  # the stop asked for, raised between two sampling steps of this batch
                bar.close()
                return EvalResult(metrics={}, seconds=time.perf_counter() - start, interrupted=True, batches=batches)
            evaluator.process(batch, preds)
            batches += 1
        if stop is not None and _stop_on_any_rank(stop):
            return EvalResult(metrics={}, seconds=time.perf_counter() - start, interrupted=True, batches=batches)
        metrics = evaluator.evaluate()
    finally:
        module.train(was_training)
    visuals_fn = getattr(evaluator, "visuals", None)
    visuals = visuals_fn() if callable(visuals_fn) else {}
    return EvalResult(metrics=metrics, seconds=time.perf_counter() - start, visuals=visuals, batches=batches)


def _stop_on_any_rank(stop: StopRequest) -> bool:
    flag = torch.tensor([float(stop.requested)])
    if get_world_size() > 1:
        torch.distributed.all_reduce(flag)
    return bool(flag[0] > 0)


def save_and_report(task: Task, result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Write ``visuals.npz`` (if any) and the task's report into ``out_dir`` (main rank only)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if result.visuals:
        # zipped in memory: a ZipFile left open on a full disk would print a traceback when collected
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **result.visuals)
        write_bytes_atomic(out_dir / VISUALS_FILE, buffer.getvalue())
    files = list(task.write_report(result.metrics, out_dir))
    if not (out_dir / "metrics.json").exists():  # a task whose report skips the JSON still leaves it
        write_text_atomic(out_dir / "metrics.json", json.dumps(result.metrics, indent=2))
        files.append(out_dir / "metrics.json")
    result.report_files = files
    return files


def evaluate_task(
    cfg: Any,
    task: Task,
    model: torch.nn.Module,
    *,
    steps: Sequence[int] | None = None,
    device: torch.device,
    out_dir: str | Path | None,
    max_samples: int | None = None,
    progress: bool = True,
    stop: StopRequest | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``cfg.eval.split`` and (main rank) write the report to ``out_dir``.

    ``steps``: the step counts to report (``--steps``); ``None``: :func:`evaluation_steps`.
    An evaluation stopped by a signal (see :func:`evaluate_model`) writes no report.
    """
    dataset = task.build_dataset(cfg, cfg.eval.split)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise InputError(f"the {cfg.eval.split!r} split has no samples to evaluate")
    loader = build_eval_loader(
        dataset,
        collate=task.collate,
        batch_size=cfg.eval.batch_size,
        num_workers=cfg.train.num_workers,
        max_samples=max_samples if max_samples is not None else cfg.eval.max_samples,
        num_replicas=get_world_size(),
        rank=get_rank(),
    )
    steps = evaluation_steps(cfg, model) if steps is None else list(steps)
    evaluator = task.build_evaluator(cfg, steps)
    result = evaluate_model(
        model, loader, evaluator, steps=steps, seed=cfg.eval.seed, device=device, progress=progress and get_rank() == 0,
        stop=stop,
    )
    if out_dir is not None and get_rank() == 0 and not result.interrupted:
        save_and_report(task, result, out_dir)
    return result
