"""Helpers of the mmdet3d front-end tests: one world through both front ends."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[3]
BEV_CONFIG = ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"
MMDET3D_CONFIG = ROOT / "configs" / "mmdet3d" / "synth_tiny_fusion_ddp.py"


def runner_config(world: Path, work_dir: Path, **options: Any):
    from bev_ddp.integrations.mmdet3d.runner import load_runner_config

    cfg = load_runner_config(MMDET3D_CONFIG, data_root=world, work_dir=work_dir, bev_config=BEV_CONFIG,
                             options=options)
    assert cfg.model.config == cfg.val_evaluator.config == cfg.val_dataloader.dataset.pipeline[3].config == str(BEV_CONFIG)
    return cfg


def mmdet3d_batch(world: Path, work_dir: Path, split: str, indices: list[int]) -> dict[str, Any]:
    """``{'inputs', 'data_samples'}`` of samples ``indices`` through the config's mmdet3d dataset and
    pipeline (val pipeline for ``val``, training pipeline for ``train``), not yet preprocessed."""
    from mmdet3d.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    cfg = runner_config(world, work_dir)
    dataset = DATASETS.build(cfg[f"{split}_dataloader"]["dataset"])
    return pseudo_collate([dataset[i] for i in indices])


def our_batch(world: Path, split: str, indices: list[int], **overrides: Any) -> dict[str, Any]:
    """The same samples through bev_ddp's own dataset (evaluation setting, as ``bev-ddp eval``)."""
    from bev_ddp.bev.task import TASK
    from bev_ddp.config import load_config
    from bev_ddp.data.structures import collate_samples

    cfg = load_config(BEV_CONFIG, [f"data.dataroot={world}", *[f"{k}={v}" for k, v in overrides.items()]],
                      schema=TASK.schema)
    dataset = TASK.build_dataset(cfg, split)
    dataset.training = False
    return collate_samples([dataset[i] for i in indices])


def same_weights(wrapper: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Our model from the same config with the wrapper's weights, re-initialised from ``seed``."""
    from bev_ddp.api import init_model

    torch.manual_seed(seed)
    ours = init_model(BEV_CONFIG)
    wrapper.model.load_state_dict(ours.state_dict())
    return ours
