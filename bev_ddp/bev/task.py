"""The BEV map segmentation task (``task: bev``) as the engine sees it (``bev_ddp.engine.task``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from bev_ddp.bev.schema import BEVConfig
from bev_ddp.data.structures import collate_samples
from bev_ddp.errors import InputError

SPLITS = ("train", "val")


def info_path(cfg: Any, split: str) -> Path:
    """``<data.info_dir or <dataroot>/infos>/bev_ddp_infos_<split>.json`` (written by ``bev-ddp prepare``)."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    info_dir = Path(cfg.data.info_dir) if cfg.data.info_dir else Path(cfg.data.dataroot) / "infos"
    return info_dir / f"bev_ddp_infos_{split}.json"


class BEVTask:
    """Builds the BEVFusion model, the nuScenes-format dataset, the IoU evaluator and the report."""

    name = "bev"
    schema = BEVConfig

    def build_model(self, cfg: Any) -> torch.nn.Module:
        from bev_ddp.bev.build import build_bev_model

        return build_bev_model(cfg)

    def build_dataset(self, cfg: Any, split: str) -> Dataset:
        from bev_ddp.data.nuscenes import NuScenesBEVDataset
        from bev_ddp.nn.backbone import image_normalisation

        d = cfg.data
        dataset = NuScenesBEVDataset(
            info_path(cfg, split),
            d.dataroot,
            image_size=tuple(d.image_size),
            training=split == "train",
            aug=OmegaConf.to_object(d.aug),
            load_sweeps=d.load_sweeps,
            classes=tuple(d.classes),
            xbound=tuple(d.xbound),
            ybound=tuple(d.ybound),
            seed=cfg.train.seed,
            map_raster=d.map_raster,
            sweep_protocol=d.sweep_protocol,
            normalisation=image_normalisation(cfg.model.camera.backbone),  # the camera encoder's mean / std
        )
        if "camera" in cfg.model.modalities:
            dataset.check_camera_images()  # every image 0 bytes: an error, not a run on black images
        return dataset

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_samples(samples)

    def build_evaluator(self, cfg: Any, steps: Sequence[int]):
        from bev_ddp.bev.heads import protocol_label
        from bev_ddp.metrics.bev_iou import BEVIoUEvaluator

        head = cfg.model.head
        protocol = protocol_label(head.ddp.eval_protocol, head.ddp.eval_draws) if head.type == "ddp" else "conv head"
        return BEVIoUEvaluator(classes=list(cfg.data.classes), steps=list(steps), num_vis=cfg.eval.num_vis,
                               grid=(tuple(cfg.data.xbound), tuple(cfg.data.ybound)), protocol=protocol)

    def write_report(self, metrics: dict[str, Any], out_dir: Path) -> list[Path]:
        from bev_ddp.report import write_report

        protocol = f" ({metrics['protocol']})" if metrics.get("protocol") else ""
        return write_report(metrics, out_dir,
                            title=f"BEV map segmentation: per-class IoU at 0.50 / at the best threshold (%){protocol}")


TASK = BEVTask()
