"""The seg and depth tasks as the engine sees them: configs, datasets, evaluators."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bev_ddp.depth.task import TASK as DEPTH
from bev_ddp.engine.task import get_task
from bev_ddp.errors import ConfigError
from bev_ddp.seg.task import TASK as SEG
from seg_helpers import CONFIGS, tiny_cfg


def test_tasks_are_reachable_from_the_engine_table():
    assert get_task("seg") is SEG and get_task("depth") is DEPTH


@pytest.mark.parametrize("path", sorted((CONFIGS / "seg").glob("*.yaml")) + sorted((CONFIGS / "depth").glob("*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_validates_against_its_schema(path):
    task = SEG if path.parent.name == "seg" else DEPTH
    cfg = tiny_cfg(task, path.name)
    assert cfg.task == task.name


def test_paper_settings_in_real_dataset_configs():
    ade = tiny_cfg(SEG, "ade20k_swin_t.yaml")
    assert ade.model.num_classes == 150 and list(ade.data.crop_size) == [512, 512]
    assert ade.model.ddp.label_scale == 0.01 and ade.model.aux_weight == 0.4 and ade.model.ddp.depth == 6
    assert ade.optim.lr == 6e-5 and ade.optim.schedule == "poly"
    city = tiny_cfg(SEG, "cityscapes_swin_t.yaml")
    assert city.model.num_classes == 19 and list(city.data.crop_size) == [512, 1024]
    assert list(city.model.inference.window_crop) == [512, 1024]
    kitti = tiny_cfg(DEPTH, "kitti_swin_t.yaml")
    assert kitti.model.max_depth == 80.0 and kitti.data.eval_crop == "garg" and kitti.data.kb_crop
    assert kitti.model.ddp.label_scale == 0.1 and kitti.model.ddp.map_channels == 1 and kitti.model.flip_tta
    nyu = tiny_cfg(DEPTH, "nyu_swin_t.yaml")
    assert nyu.model.max_depth == 10.0 and nyu.data.eval_crop == "nyu" and not nyu.data.kb_crop


def _export(root, classes=("sky", "road", "car")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps({"classes": list(classes), "depth_scale": 1000}))
    for split in ("train", "val"):
        for i in range(2):
            for sub in ("images", "labels", "depth"):
                (root / sub / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)).save(root / "images" / split / f"c{i}.jpg")
            Image.fromarray(np.full((32, 48), i, np.uint8)).save(root / "labels" / split / f"c{i}.png")
            Image.fromarray(np.full((32, 48), 5000, np.uint16)).save(root / "depth" / split / f"c{i}.png")


def test_datasets_evaluators_and_class_count_check(tmp_path):
    _export(tmp_path)
    cfg = tiny_cfg(SEG, "synth_tiny.yaml", f"data.root={tmp_path}", "model.num_classes=3")
    ds = SEG.build_dataset(cfg, "train")
    batch = SEG.collate([ds[0], ds[1]])
    assert batch["img"].shape == (2, 3, 32, 48) and batch["gt_seg"].shape == (2, 32, 48)
    evaluator = SEG.build_evaluator(cfg, [1, 3])
    assert evaluator.class_names == ["sky", "road", "car"]
    with pytest.raises(ConfigError, match="num_classes"):
        SEG.build_dataset(tiny_cfg(SEG, "synth_tiny.yaml", f"data.root={tmp_path}"), "train")
    with pytest.raises(ConfigError, match="format"):
        SEG.build_dataset(tiny_cfg(SEG, "synth_tiny.yaml", "data.format=pascal"), "train")
    dcfg = tiny_cfg(DEPTH, "synth_tiny.yaml", f"data.root={tmp_path}")
    dbatch = DEPTH.collate([DEPTH.build_dataset(dcfg, "val")[0]])
    assert dbatch["gt_depth"].shape == (1, 1, 32, 48) and torch.allclose(dbatch["gt_depth"], torch.tensor(5.0))
    assert DEPTH.build_evaluator(dcfg, [1]).crop is None


def test_one_training_step_and_prediction_through_the_task(tmp_path):
    _export(tmp_path)
    cfg = tiny_cfg(SEG, "synth_tiny.yaml", f"data.root={tmp_path}", "model.num_classes=3")
    torch.manual_seed(0)
    model = SEG.build_model(cfg)
    batch = SEG.collate([SEG.build_dataset(cfg, "train")[i] for i in range(2)])
    _, losses = model(batch)
    sum(losses.values()).backward()
    evaluator = SEG.build_evaluator(cfg, [1, 2])
    model.eval()
    vbatch = SEG.collate([SEG.build_dataset(cfg, "val")[i] for i in range(2)])
    evaluator.process(vbatch, model.predict(vbatch, steps=[1, 2], seed=0))
    metrics = evaluator.evaluate()
    json.dumps(metrics)  # the engine writes it as JSON
    files = SEG.write_report(metrics, tmp_path / "report")
    assert (tmp_path / "report" / "metrics.json") in files


@pytest.mark.parametrize("config", ["seg/synth_tiny.yaml", "depth/synth_tiny.yaml"])
def test_info_command_prints_parameter_counts(config, capsys):
    from bev_ddp.cli import main

    assert main(["info", str(CONFIGS / config), "--json"]) == 0
    out = capsys.readouterr().out
    model = SEG.build_model(tiny_cfg(SEG, "synth_tiny.yaml")) if config.startswith("seg") else \
        DEPTH.build_model(tiny_cfg(DEPTH, "synth_tiny.yaml"))
    assert str(sum(p.numel() for p in model.parameters())) in out
