"""A tiny task implementing the engine's contract, for testing the engine without the BEV model.

Samples: ``feat`` [C, S, S] standard normal (fixed per index), ground truth
``gt_masks_bev`` [2, S, S] = ``w_k · feat > 0`` for two fixed weight vectors ``w_k``.  Training
samples are randomly flipped (global torch RNG, so the engine's per-sample seeding matters).
The model is a 1×1 convolution with optional input noise in training (global torch RNG, so
the engine's RNG checkpointing matters) and buffers counting forward calls and self-aligned
calls.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bev_ddp.schema import EvalSchema, OptimSchema, TrainSchema
from bev_ddp.metrics.bev_iou import BEVIoUEvaluator
from bev_ddp.report import write_report

CLASSES = ("left", "right")


@dataclass
class ToyData:
    num_train: int = 32
    num_val: int = 16
    size: int = 8
    channels: int = 4


@dataclass
class ToyModelCfg:
    noise: float = 0.0  # std of training input noise (draws from the global torch RNG)
    nan_at_call: int = -1  # forward call index whose loss is NaN
    interrupt_at_call: int = -1  # forward call index that sends SIGINT to the process


@dataclass
class ToyConfig:
    task: str = "toy"
    train: TrainSchema = field(default_factory=TrainSchema)
    optim: OptimSchema = field(default_factory=OptimSchema)
    eval: EvalSchema = field(default_factory=EvalSchema)
    data: ToyData = field(default_factory=ToyData)
    model: ToyModelCfg = field(default_factory=ToyModelCfg)


class ToyDataset(Dataset):
    def __init__(self, data: ToyData, *, split: str):
        self.data = data
        self.training = split == "train"
        self.length = data.num_train if self.training else data.num_val
        self.offset = 0 if self.training else 100_000
        self.epoch = 0
        g = torch.Generator().manual_seed(1234)
        self.weights = torch.randn(len(CLASSES), data.channels, generator=g)  # [K, C]

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(self.offset + index)
        feat = torch.randn(self.data.channels, self.data.size, self.data.size, generator=g)  # [C, S, S]
        gt = (torch.einsum("kc,cxy->kxy", self.weights, feat) > 0).float()  # [K, S, S]
        if self.training and torch.rand(()) < 0.5:  # augmentation from the global RNG
            feat, gt = feat.flip(-1), gt.flip(-1)
        own = torch.Generator().manual_seed(10_000 * self.epoch + index)
        if self.training and torch.rand((), generator=own) < 0.5:  # the dataset's own per-epoch draw
            feat, gt = feat.transpose(-1, -2), gt.transpose(-1, -2)
        return {"feat": feat, "gt_masks_bev": gt, "meta": {"token": f"toy-{index}"}}


@dataclass
class ToyPrediction:
    probs: torch.Tensor  # [B, K, S, S]
    uncertainty: torch.Tensor  # [B, S, S]


class ToyModel(torch.nn.Module):
    def __init__(self, *, channels: int, cfg: ToyModelCfg):
        super().__init__()
        self.cfg = cfg
        self.conv = torch.nn.Conv2d(channels, len(CLASSES), 1)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("self_aligned_calls", torch.zeros((), dtype=torch.int64))

    def forward(self, batch: dict[str, Any], self_aligned: bool = False):
        call = int(self.calls)
        self.calls += 1
        if self_aligned:
            self.self_aligned_calls += 1
        if call == self.cfg.interrupt_at_call:
            os.kill(os.getpid(), signal.SIGINT)
        feat = batch["feat"]
        if self.cfg.noise > 0:
            feat = feat + self.cfg.noise * torch.randn_like(feat)
        logits = self.conv(feat)  # [B, K, S, S]
        loss = F.binary_cross_entropy_with_logits(logits, batch["gt_masks_bev"])
        if call == self.cfg.nan_at_call:
            loss = loss * float("nan")
        return logits, {"loss_bce": loss}

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], steps: Sequence[int], seed: int = 0) -> dict[int, ToyPrediction]:
        probs = torch.sigmoid(self.conv(batch["feat"]))
        uncertainty = 1 - (2 * probs - 1).abs().min(dim=1).values  # [B, S, S], high near 0.5
        return {s: ToyPrediction(probs=probs, uncertainty=uncertainty) for s in steps}


class ToyTask:
    name = "toy"
    schema = ToyConfig

    def build_model(self, cfg: Any) -> torch.nn.Module:
        return ToyModel(channels=cfg.data.channels, cfg=cfg.model)

    def build_dataset(self, cfg: Any, split: str) -> Dataset:
        return ToyDataset(cfg.data, split=split)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from bev_ddp.data.structures import collate_samples

        return collate_samples(samples)

    def build_evaluator(self, cfg: Any, steps: Sequence[int]) -> BEVIoUEvaluator:
        return BEVIoUEvaluator(classes=CLASSES, steps=steps, num_vis=cfg.eval.num_vis)

    def write_report(self, metrics: dict[str, Any], out_dir: Path) -> list[Path]:
        return write_report(metrics, out_dir, console=False)


TASK = ToyTask()


def toy_config(**overrides: Any):
    """A ToyConfig as an OmegaConf node, with ``section.key=value`` style overrides."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(ToyConfig)
    cfg.train.iters = 8
    cfg.train.batch_size = 4
    cfg.train.log_interval = 2
    cfg.train.checkpoint_interval = 4
    cfg.train.amp = False
    cfg.optim.lr = 0.05
    cfg.optim.warmup_iters = 2
    cfg.eval.num_vis = 2
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return cfg
