"""The training loop shared by every task (BEV, image segmentation, depth).

One :class:`Trainer` runs ``train.iters`` optimiser steps of AdamW with gradient clipping and a
per-iteration LR schedule, on one process or under ``torchrun`` with DistributedDataParallel
(gloo on CPU, nccl on CUDA), with autocast + GradScaler on CUDA only.  The last
``train.self_aligned_iters`` steps call ``model(batch, self_aligned=True)`` (self-aligned
denoising, DDP paper Alg. 4).

Resuming is exact on the CPU: a checkpoint holds the model, optimizer, scheduler and scaler
states, each rank's random state and the data position, all captured at the *top* of a step,
so ``N`` steps straight and ``N/2`` + resume + ``N/2`` give bit-identical weights.

Failures keep what was produced: a non-finite loss (or gradient norm without AMP) stops the run
with :class:`NonFiniteLossError` after saving the state just before the failing step; Ctrl-C
(SIGINT) or SIGTERM saves a checkpoint at the next step boundary (or stops a running evaluation
without writing its report) and returns cleanly (a second signal aborts at once).  Both decisions
are all-reduced so every rank stops at the same step.  The work dir is probed for writability
and room before the model is trained; temporaries of a killed checkpoint write are removed and
``log.jsonl`` is cut back to the resumed step.
"""
from __future__ import annotations

import inspect
import logging
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from bev_ddp import comm
from bev_ddp.config import to_dict
from bev_ddp.engine import distributed as du
from bev_ddp.engine.checkpoint import (FORMAT_VERSION, LATEST, RNGState, check_weights_match, config_changes,
                                      link_latest, load_checkpoint, model_fingerprint, remove_stale_checkpoint_tmp,
                                      save_atomic)
from bev_ddp.engine.data import build_train_loader, move_to_device
from bev_ddp.engine.evaluation import EvalResult, evaluate_task
from bev_ddp.engine.logger import LossWindow, MetricLogger
from bev_ddp.engine.lr_schedule import LRFactor, build_lr_scheduler
from bev_ddp.engine.interrupt import StopRequest, signal_name
from bev_ddp.engine.param_groups import decay_param_groups
from bev_ddp.engine.process import derived_seed, seed_everything
from bev_ddp.engine.task import Task
from bev_ddp.errors import ConfigError, InputError
from bev_ddp.output_files import MIN_FREE_BYTES, probe_output_dir, write_text_atomic

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the last good state was saved first."""


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.run`."""

    status: str  # "finished" | "interrupted"
    step: int
    work_dir: Path
    checkpoint: Path | None
    losses: dict[str, float] = field(default_factory=dict)  # mean of the last logging interval
    evals: dict[int, EvalResult] = field(default_factory=dict)  # step -> evaluation (main rank)
    signum: int | None = None  # the signal that stopped the run (SIGINT / SIGTERM)

    @property
    def exit_code(self) -> int:
        """0 when finished, ``128 + signal`` when stopped by one."""
        return 0 if self.signum is None else 128 + self.signum


@dataclass
class _ResumePoint:
    """Everything that defines "where training is" at the top of a step, besides the weights."""

    step: int
    epoch: int
    position: int  # batches of this epoch already consumed
    rng: RNGState


class Trainer:
    """Trains ``task``'s model from ``cfg`` (a task config with ``train``/``optim``/``eval``).

    Args:
        cfg: resolved config (``load_config(..., schema=task.schema)``).
        task: the task object (``bev_ddp.engine.task.get_task(cfg.task)``).
        work_dir: logs, checkpoints and evaluation reports go here.
        final_eval: evaluate on ``cfg.eval.split`` after the last step.
        progress: show tqdm bars (main rank only).
    """

    def __init__(self, *, cfg: Any, task: Task, work_dir: str | Path, final_eval: bool = True, progress: bool = True):
        self.cfg = cfg
        self.task = task
        self.work_dir = Path(work_dir)
        self.final_eval = final_eval
        self.dist = du.init_from_env()
        self.progress = progress and self.dist.is_main
        tc, oc = cfg.train, cfg.optim
        if tc.self_aligned_iters < 0 or tc.self_aligned_iters > tc.iters:
            raise ConfigError(f"train.self_aligned_iters must be in [0, train.iters={tc.iters}], got {tc.self_aligned_iters}")
        if tc.log_interval < 1 or tc.checkpoint_interval < 1:
            raise ConfigError("train.log_interval and train.checkpoint_interval must be >= 1")
        if self.dist.is_main:  # a read-only, full or blocked work dir fails here, not after the training
            probe_output_dir(self.work_dir, what="work dir")
            for stale in remove_stale_checkpoint_tmp(self.work_dir):
                log.warning("removed a temporary left by an interrupted checkpoint write: %s", stale)

        seed_everything(tc.seed)  # identical initial weights on every rank
        self.model = task.build_model(cfg).to(self.dist.device)
        if tc.self_aligned_iters > 0 and "self_aligned" not in inspect.signature(self.model.forward).parameters:
            raise ConfigError(
                f"train.self_aligned_iters={tc.self_aligned_iters} but {type(self.model).__name__}.forward takes no "
                "self_aligned flag (a model without a DDP head?); set train.self_aligned_iters=0"
            )
        self.amp = bool(tc.amp) and self.dist.device.type == "cuda"
        params = decay_param_groups(self.model, weight_decay=oc.weight_decay, no_decay_keys=oc.no_decay_keys)
        if not params:
            raise ConfigError(f"{type(self.model).__name__} has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            params, lr=oc.lr, betas=(float(oc.betas[0]), float(oc.betas[1])), weight_decay=oc.weight_decay
        )
        self.scheduler = build_lr_scheduler(
            self.optimizer,
            LRFactor.from_config(oc, tc.iters),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if self.dist.is_main:  # room for two checkpoints (model + AdamW moments, 4 bytes each)
            ckpt_bytes = 3 * 4 * sum(p.numel() for p in self.model.parameters())
            probe_output_dir(self.work_dir, what="work dir", min_free_bytes=max(MIN_FREE_BYTES, 2 * ckpt_bytes))
        self.train_set = task.build_dataset(cfg, "train")
        self.loader, self.sampler = build_train_loader(
            self.train_set,
            collate=task.collate,
            batch_size=tc.batch_size,
            num_workers=tc.num_workers,
            seed=tc.seed,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
        )
        self.ddp_model: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None,
                find_unused_parameters=bool(tc.find_unused_parameters),
            )
        seed_everything(derived_seed(tc.seed, self.dist.rank, 1))  # per-rank stream for noise and dropout
        self.step, self.epoch, self.position = 0, 0, 0
        self._batches = None
        self._stop: StopRequest | None = None  # set while run() listens for SIGINT / SIGTERM

    # ------------------------------------------------------------------ state
    def _capture(self) -> _ResumePoint:
        return _ResumePoint(self.step, self.epoch, self.position, RNGState.capture())

    def state_dict(self, point: _ResumePoint) -> dict[str, Any] | None:
        """Checkpoint dict of ``point`` (collective: every rank's RNG goes to rank 0)."""
        rngs: list[Any] = comm.gather(point.rng.to_dict())
        if not self.dist.is_main:
            return None
        return {
            "format": FORMAT_VERSION,
            "step": point.step,
            "model": self.model.state_dict(),
            "model_fingerprint": model_fingerprint(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else None,
            "rng": rngs,
            "data": {"epoch": point.epoch, "position": point.position},
            "config": to_dict(self.cfg),
            "world_size": self.dist.world_size,
        }

    def save(self, point: _ResumePoint, *, name: str | None = None) -> Path:
        """Write the checkpoint of ``point`` atomically; ``latest.pth`` links to it."""
        state = self.state_dict(point)
        ckpt_dir = self.work_dir / "checkpoints"
        path = ckpt_dir / (name or f"iter_{point.step:07d}.pth")
        if state is not None:
            save_atomic(state, path)
            link_latest(path, self.work_dir / LATEST)
            self._prune(ckpt_dir)
            log.info("checkpoint written: %s", path)
        du.barrier()
        return path

    def _prune(self, ckpt_dir: Path) -> None:
        keep = int(self.cfg.train.keep_checkpoints)
        if keep <= 0:
            return
        files = sorted(ckpt_dir.glob("iter_*.pth"))
        for old in files[:-keep]:
            old.unlink(missing_ok=True)

    def load(self, path: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save` (a file or a work dir)."""
        path = Path(path)
        if path.is_dir():
            path = path / LATEST
        ckpt = load_checkpoint(path, map_location="cpu")  # also checks format, step and finite weights
        check_weights_match(self.model.state_dict(), ckpt["model"], path, ckpt.get("model_fingerprint"))
        self.model.load_state_dict(ckpt["model"])
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            # keep this run's schedule settings (e.g. a longer train.iters), restore only its position
            lambdas = [None] * len(self.scheduler.lr_lambdas)
            self.scheduler.load_state_dict({**ckpt["scheduler"], "lr_lambdas": lambdas})
        except (ValueError, KeyError) as exc:
            raise InputError(f"checkpoint {path}: optimizer/scheduler state does not fit this model: {exc}") from exc
        if self.amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.epoch, self.position = int(ckpt["data"]["epoch"]), int(ckpt["data"]["position"])
        rngs = ckpt["rng"]
        if len(rngs) == self.dist.world_size:
            RNGState.from_dict(rngs[self.dist.rank]).restore()
        else:
            log.warning(
                "checkpoint %s was written by %d process(es), this run has %d: random streams are re-seeded, "
                "so the continuation is not bit-identical",
                path, len(rngs), self.dist.world_size,
            )
            seed_everything(derived_seed(self.cfg.train.seed, self.dist.rank, self.step))
        changed = config_changes(ckpt["config"], to_dict(self.cfg))
        if changed:
            log.warning("config differs from the one in %s: %s", path, ", ".join(changed))
        log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ loop
    def _next_batch(self) -> Any:
        bs = self.cfg.train.batch_size
        while True:
            if self._batches is None:
                self.sampler.set_epoch(self.epoch)
                if callable(getattr(self.train_set, "set_epoch", None)):  # datasets drawing augmentation per epoch
                    self.train_set.set_epoch(self.epoch)
                self.sampler.set_start(self.position * bs)
                self._batches = iter(self.loader)
            try:
                batch = next(self._batches)
            except StopIteration:
                self._batches = None
                self.epoch, self.position = self.epoch + 1, 0
                continue
            self.position += 1
            return batch

    def _forward(self, batch: Any, self_aligned: bool) -> dict[str, torch.Tensor]:
        kwargs = {"self_aligned": True} if self_aligned else {}
        with torch.autocast(device_type=self.dist.device.type, dtype=torch.float16, enabled=self.amp):
            _, losses = self.ddp_model(batch, **kwargs)
        if not isinstance(losses, dict) or not losses:
            raise TypeError(
                f"{type(self.model).__name__}(batch) must return (preds, dict of losses), got {type(losses).__name__}"
            )
        return losses

    def run(self, resume: str | Path | None = None) -> TrainResult:
        """Train to ``train.iters``; returns after the final checkpoint (and evaluation)."""
        tc = self.cfg.train
        if resume is not None:
            self.load(resume)
        start_step = self.step
        # records after the resumed step (written before a SIGKILL) are dropped, so no step repeats
        logger = MetricLogger(self.work_dir, start_step=start_step) if self.dist.is_main else None
        if self.dist.is_main:
            write_text_atomic(self.work_dir / "config.yaml", OmegaConf.to_yaml(self.cfg))
        result = TrainResult(status="finished", step=self.step, work_dir=self.work_dir, checkpoint=None)
        window = LossWindow()
        bar = tqdm(total=tc.iters, initial=self.step, desc="train", unit="it", disable=not self.progress, dynamic_ncols=True)
        self.ddp_model.train()
        stopping = False
        try:
            with StopRequest() as stop:
                self._stop = stop
                while True:
                    point = self._capture()
                    if self.step >= tc.iters or stopping:
                        result.checkpoint = self.save(point)
                        break
                    if self.step != start_step and self.step % tc.checkpoint_interval == 0:
                        result.checkpoint = self.save(point)
                    self_aligned = self.step >= tc.iters - tc.self_aligned_iters
                    losses, grad_norm, stopping = self._train_step(point, self_aligned, stop)
                    self.step += 1
                    window.add(losses)
                    bar.update(1)
                    if self.step % tc.log_interval == 0 or self.step == tc.iters:
                        result.losses = self._log(window, grad_norm, self_aligned, logger, bar)
                    if tc.eval_interval > 0 and self.step % tc.eval_interval == 0 and self.step < tc.iters:
                        stopping = self._evaluate_into(result, logger) or stopping
                if not stopping and self.final_eval:
                    stopping = self._evaluate_into(result, logger)
            result.step = self.step
            if stopping:  # the same on every rank (all-reduced)
                result.status, result.signum = "interrupted", stop.signum or signal.SIGTERM
                log.warning("stopped by %s at step %d; continue with --resume %s", signal_name(stop.signum),
                            self.step, result.checkpoint)
        finally:
            self._stop = None
            bar.close()
            if logger is not None:
                logger.close()
        return result

    def _train_step(self, point: _ResumePoint, self_aligned: bool, stop: StopRequest) -> tuple[dict[str, float], float, bool]:
        """One optimiser step; returns (loss values, gradient norm, stop requested on any rank)."""
        buffers = {k: b.detach().clone() for k, b in self.model.named_buffers()}  # e.g. BatchNorm statistics
        batch = move_to_device(self._next_batch(), self.dist.device)
        losses = self._forward(batch, self_aligned)
        loss = sum(losses.values())
        values = {k: float(v.detach()) for k, v in losses.items()}
        values["loss"] = float(loss.detach())
        flags = du.all_reduce_sum(torch.tensor([0.0 if math.isfinite(values["loss"]) else 1.0, float(stop.requested)]))
        if flags[0] > 0:
            self._abandon_step(point, buffers)
            path = self.save(point)
            raise NonFiniteLossError(
                f"loss is not finite at step {point.step} ({values}); the state before this step is saved in {path}. "
                "Lower optim.lr, tighten optim.grad_clip or check the data, then --resume from it."
            )
        grad_norm = self._optimize(loss, point, buffers)
        return values, grad_norm, bool(flags[1] > 0)

    def _abandon_step(self, point: _ResumePoint, buffers: dict[str, torch.Tensor]) -> None:
        """Undo what a step that is not taken changed: model buffers, data position."""
        own = dict(self.model.named_buffers())
        with torch.no_grad():
            for k, value in buffers.items():
                own[k].copy_(value)
        self.optimizer.zero_grad(set_to_none=True)
        self.step, self.epoch, self.position = point.step, point.epoch, point.position
        self._batches = None

    def _log(self, window: LossWindow, grad_norm: float, self_aligned: bool, logger: MetricLogger | None,
             bar: Any) -> dict[str, float]:
        means, rate = window.flush()
        scalars = {
            **means,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "it_per_s": rate,
            "self_aligned": float(self_aligned),
        }
        bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{scalars['lr']:.2e}")
        if not self.progress and self.dist.is_main:
            log.info("step %d/%d  loss %.4f  lr %.2e  %.2f it/s%s", self.step, self.cfg.train.iters, means["loss"],
                     scalars["lr"], rate, "  (self-aligned)" if self_aligned else "")
        if logger is not None:
            logger.log(self.step, scalars, extra={"epoch": self.epoch})
        return means

    def _optimize(self, loss: torch.Tensor, point: _ResumePoint, buffers: dict[str, torch.Tensor]) -> float:
        clip = self.cfg.optim.grad_clip
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=clip if clip is not None else math.inf))
        if not self.amp and not math.isfinite(grad_norm):  # identical on every rank after DDP's all-reduce
            self._abandon_step(point, buffers)
            path = self.save(point)
            raise NonFiniteLossError(
                f"gradient norm is not finite at step {point.step}; the state before this step is saved in {path}"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return grad_norm

    def _evaluate_into(self, result: TrainResult, logger: MetricLogger | None) -> bool:
        """Evaluate at this step into ``result.evals``; True when a signal stopped the evaluation."""
        evaluation = self._evaluate(logger)
        if evaluation.interrupted:
            return True
        result.evals[self.step] = evaluation
        return False

    def _evaluate(self, logger: MetricLogger | None) -> EvalResult:
        rng = RNGState.capture()  # evaluation must not change the training's random stream
        out_dir = self.work_dir / "eval" / f"iter_{self.step:07d}"
        result = evaluate_task(
            self.cfg, self.task, self.model, device=self.dist.device,
            out_dir=out_dir, progress=self.progress, stop=self._stop,
        )
        rng.restore()
        if logger is not None and not result.interrupted:  # per-class scores, AUROC, timing, memory, a map image
            logger.log_evaluation(self.step, result.metrics, result.visuals, seconds=result.seconds)
        return result


def train(cfg: Any, *, task: Task, work_dir: str | Path, resume: str | Path | None = None,
          final_eval: bool = True, progress: bool = True) -> TrainResult:
    """Build a :class:`Trainer` and run it (see there)."""
    return Trainer(cfg=cfg, task=task, work_dir=work_dir, final_eval=final_eval, progress=progress).run(resume)
