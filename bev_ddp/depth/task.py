"""The monocular depth task (``task: depth``) as the engine sees it (:mod:`bev_ddp.engine.task`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from bev_ddp.config import int_tuple
from bev_ddp.data import image_datasets as imds
from bev_ddp.data.image_pipelines import DepthPipeline
from bev_ddp.data.structures import collate_samples
from bev_ddp.depth.schema import DepthConfig
from bev_ddp.errors import ConfigError

DEPTH_FORMATS = ("kitti", "nyu", "synthetic")


class DepthTask:
    """Builds the DDP depth estimator, the depth datasets, the depth evaluator and the report."""

    name = "depth"
    schema = DepthConfig

    def build_model(self, cfg: Any) -> torch.nn.Module:
        from bev_ddp.depth.build import build_depth_model

        return build_depth_model(cfg)

    def build_dataset(self, cfg: Any, split: str) -> Dataset:
        d = cfg.data
        if d.format not in DEPTH_FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(DEPTH_FORMATS)}, got {d.format!r}")
        pipeline = DepthPipeline(kb_crop=d.kb_crop, resize=int_tuple(d.resize), crop_size=int_tuple(d.crop_size),
                                      flip_prob=d.flip_prob)
        training = split == "train"
        common = dict(pipeline=pipeline, training=training, seed=cfg.train.seed, max_depth=cfg.model.max_depth)
        if d.format == "synthetic":
            return imds.synthetic_depth_dataset(d.root, split, **common)
        root = Path(d.root)
        split_file = d.train_split_file if training else d.val_split_file
        return imds.depth_split_dataset(root / split_file, image_root=d.image_root or root,
                                        depth_root=d.depth_root or root, depth_scale=d.png_scale, **common)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_samples(samples)

    def build_evaluator(self, cfg: Any, steps: Sequence[int]):
        from bev_ddp.metrics.depth import DepthEvaluator

        return DepthEvaluator(steps=list(steps), min_depth=cfg.model.min_depth, max_depth=cfg.model.max_depth,
                              crop=cfg.data.eval_crop, num_vis=cfg.eval.num_vis)

    def write_report(self, metrics: dict[str, Any], out_dir: Path) -> list[Path]:
        from bev_ddp.report import write_report

        return write_report(metrics, out_dir, title="Monocular depth (DDP)")


TASK = DepthTask()
