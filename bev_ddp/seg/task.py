"""The image segmentation task (``task: seg``) as the engine sees it (:mod:`bev_ddp.engine.task`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from bev_ddp.config import int_tuple
from bev_ddp.data import image_datasets as imds
from bev_ddp.data.image_pipelines import SegPipeline
from bev_ddp.data.structures import collate_samples
from bev_ddp.errors import ConfigError
from bev_ddp.seg.schema import SegConfig

# data.format -> (dataset builder, fixed class names or None when read from the export's meta.json)
SEG_FORMATS = {
    "ade20k": (imds.ade20k_dataset, imds.ADE20K_CLASSES),
    "cityscapes": (imds.cityscapes_dataset, imds.CITYSCAPES_CLASSES),
    "synthetic": (imds.synthetic_seg_dataset, None),
}


def seg_format(cfg: Any) -> tuple[Any, Any]:
    if cfg.data.format not in SEG_FORMATS:
        raise ConfigError(f"data.format must be one of {', '.join(SEG_FORMATS)}, got {cfg.data.format!r}")
    return SEG_FORMATS[cfg.data.format]


def class_names(cfg: Any) -> list[str]:
    """Class names of the configured dataset; their number must equal ``model.num_classes``."""
    _, classes = seg_format(cfg)
    names = list(classes) if classes is not None else list(imds.read_export_meta(cfg.data.root)["classes"])
    if len(names) != cfg.model.num_classes:
        raise ConfigError(f"model.num_classes is {cfg.model.num_classes} but the {cfg.data.format} data at "
                          f"{cfg.data.root} has {len(names)} classes")
    return names


class SegTask:
    """Builds the DDP segmentor, the image datasets, the mIoU evaluator and the report."""

    name = "seg"
    schema = SegConfig

    def build_model(self, cfg: Any) -> torch.nn.Module:
        from bev_ddp.seg.build import build_seg_model

        return build_seg_model(cfg)

    def build_dataset(self, cfg: Any, split: str) -> Dataset:
        builder, _ = seg_format(cfg)
        d = cfg.data
        pipeline = SegPipeline(scale=int_tuple(d.scale), ratio_range=tuple(d.ratio_range),
                                    crop_size=int_tuple(d.crop_size), flip_prob=d.flip_prob)
        dataset = builder(d.root, split, pipeline=pipeline, training=split == "train", seed=cfg.train.seed)
        if len(dataset.classes) != cfg.model.num_classes:
            raise ConfigError(f"model.num_classes is {cfg.model.num_classes} but {d.root} has "
                              f"{len(dataset.classes)} classes")
        return dataset

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_samples(samples)

    def build_evaluator(self, cfg: Any, steps: Sequence[int]):
        from bev_ddp.metrics.seg import SegEvaluator

        return SegEvaluator(num_classes=cfg.model.num_classes, class_names=class_names(cfg), steps=list(steps),
                            num_vis=cfg.eval.num_vis)

    def write_report(self, metrics: dict[str, Any], out_dir: Path) -> list[Path]:
        from bev_ddp.report import write_report

        return write_report(metrics, out_dir, title="Image segmentation (DDP): per-class IoU")


TASK = SegTask()
