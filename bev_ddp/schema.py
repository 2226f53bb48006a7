"""Config sections shared by every task (BEV, seg, depth).

A task's config dataclass (``BEVConfig``, ``SegConfig``, ``DepthConfig``) embeds them as its
``train``, ``optim`` and ``eval`` fields next to its own ``data`` and ``model`` sections.  They sit
at the bottom of the package so that task schemas import them without importing the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class OptimSchema:
    """AdamW with gradient clipping and a per-iteration LR schedule."""

    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: Optional[float] = 35.0  # max global grad norm; None disables
    schedule: str = "cosine"  # cosine | poly | constant
    warmup_iters: int = 0
    min_lr_ratio: float = 1e-3
    poly_power: float = 1.0


@dataclass
class TrainSchema:
    """Training loop settings. ``iters`` counts optimiser steps over the whole run."""

    iters: int = 1000
    batch_size: int = 2  # per process
    num_workers: int = 0
    seed: int = 0
    amp: bool = True  # autocast + GradScaler, only on CUDA
    log_interval: int = 10
    checkpoint_interval: int = 500
    eval_interval: int = 0  # 0 = only at the end
    self_aligned_iters: int = 0  # last N iterations use self-aligned denoising (DDP heads, Alg. 4)
    work_dir: str = "work_dirs/run"
    keep_checkpoints: int = 3  # newest iter_*.pth files kept (0 keeps all); latest.pth always points at the newest
    find_unused_parameters: bool = False  # DistributedDataParallel option, for models with branches unused in a step


@dataclass
class EvalSchema:
    """Evaluation settings."""

    steps: list[int] = field(default_factory=lambda: [1, 3])
    seed: int = 0
    batch_size: int = 1
    split: str = "val"
    max_samples: Optional[int] = None
    num_vis: int = 4  # prediction figures written to the report
