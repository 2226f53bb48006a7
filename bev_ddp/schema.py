"""Config sections shared by every task (BEV, seg, depth).

A task's config dataclass (``BEVConfig``, ``SegConfig``, ``DepthConfig``) embeds them as its
``train``, ``optim`` and ``eval`` fields next to its own ``data`` and ``model`` sections.  They sit
at the bottom of the package so that task schemas import them without importing the engine.

Values are checked when the config is loaded (:func:`bev_ddp.config.constrained` rules), so a bad
value fails with its key named before any work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from bev_ddp.config import constrained


@dataclass
class OptimSchema:
    """AdamW with gradient clipping and a per-iteration LR schedule."""

    lr: float = constrained(2e-4, gt=0)
    weight_decay: float = constrained(0.01, ge=0)
    betas: tuple[float, float] = constrained((0.9, 0.999), each_ge=0, each_lt=1)
    grad_clip: Optional[float] = constrained(35.0, gt=0)  # max global grad norm; None disables
    schedule: str = constrained("cosine", choices=("cosine", "poly", "constant"))
    warmup_iters: int = constrained(0, ge=0)
    min_lr_ratio: float = constrained(1e-3, ge=0, le=1)
    poly_power: float = constrained(1.0, gt=0)
    # how warm-up and decay combine (bev_ddp/engine/lr_schedule.py): "ours" = linear from 1/warmup_iters,
    # decay after it; "mmcv" = mmcv 1.x: decay over the whole run, times a warm-up from warmup_ratio
    warmup_style: str = constrained("ours", choices=("ours", "mmcv"))
    warmup_ratio: float = constrained(0.1, gt=0, le=1)  # LR fraction at iteration 0, mmcv style only (mmcv's default)
    no_decay_keys: list[str] = field(default_factory=list)  # parameter-name substrings exempt from weight decay


@dataclass
class TrainSchema:
    """Training loop settings. ``iters`` counts optimiser steps over the whole run."""

    iters: int = constrained(1000, ge=1)
    batch_size: int = constrained(2, ge=1)  # per process
    num_workers: int = constrained(0, ge=0)
    seed: int = constrained(0, ge=0)
    amp: bool = True  # autocast + GradScaler, only on CUDA
    log_interval: int = constrained(10, ge=1)
    checkpoint_interval: int = constrained(500, ge=1)
    eval_interval: int = constrained(0, ge=0)  # 0 = only at the end
    self_aligned_iters: int = constrained(0, ge=0)  # last N iterations use self-aligned denoising (DDP heads, Alg. 4)
    work_dir: str = "work_dirs/run"
    keep_checkpoints: int = constrained(3, ge=0)  # newest iter_*.pth files kept (0 keeps all); latest.pth always points at the newest
    find_unused_parameters: bool = False  # DistributedDataParallel option, for models with branches unused in a step


@dataclass
class EvalSchema:
    """Evaluation settings."""

    # step counts every evaluation reports (several: the dynamic-inference comparison); unset: the
    # model's own default, its head's ``steps`` (model.head.ddp.steps / model.ddp.steps)
    steps: Optional[list[int]] = constrained(None, non_empty=True, each_ge=1)
    seed: int = constrained(0, ge=0)
    batch_size: int = constrained(1, ge=1)
    split: str = "val"
    max_samples: Optional[int] = constrained(None, ge=1)
    num_vis: int = constrained(4, ge=0)  # prediction figures written to the report
