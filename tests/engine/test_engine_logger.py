"""Evaluation logs: the TensorBoard event file (read back with tensorboard's EventAccumulator) and
``log.jsonl`` hold per-class IoU, mIoU@0.50, AUROC, timing, peak memory and the map image."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bev_ddp.engine.logger import MetricLogger, map_image
from bev_ddp.metrics.bev_iou import BEVIoUEvaluator

CLASSES = ["drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider"]


def _evaluation():
    """Metrics and visuals of a real BEV evaluator over random maps (X=12 != Y=10 to catch transposes)."""
    gen = torch.Generator().manual_seed(0)
    gt = (torch.rand(2, 6, 12, 10, generator=gen) > 0.6).float()
    probs = (0.5 * gt + 0.6 * torch.rand(2, 6, 12, 10, generator=gen)).clamp(0, 1)  # some pixels wrong
    uncertainty = torch.rand(2, 12, 10, generator=gen)
    evaluator = BEVIoUEvaluator(classes=CLASSES, steps=[1, 3], num_vis=1)
    preds = {s: SimpleNamespace(probs=probs, uncertainty=uncertainty) for s in (1, 3)}
    evaluator.process({"gt_masks_bev": gt, "meta": [{"token": "a"}, {"token": "b"}]}, preds)
    return evaluator.evaluate(), evaluator.visuals()


def test_tensorboard_event_file_has_per_class_scalars_and_the_map_image(tmp_path):
    metrics, visuals = _evaluation()
    logger = MetricLogger(tmp_path)
    logger.log(10, {"loss": 1.0, "it_per_s": 4.0})
    written = logger.log_evaluation(10, metrics, visuals, seconds=2.5)
    logger.close()

    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for name in CLASSES:
        assert f"eval/steps1/IoU/{name}" in tags and f"eval/steps3/IoU@0.50/{name}" in tags
    assert {"eval/steps1/mIoU@0.50", "eval/steps3/uncertainty_auroc", "eval/train_iter_time_s",
            "eval/eval_time_s", "eval/peak_memory_mib"} <= tags
    best = metrics["steps"]["1"]["per_class"]["walkway"]
    assert acc.Scalars("eval/steps1/IoU/walkway")[0].value == np.float32(best)
    assert acc.Scalars("eval/steps1/IoU@0.50/divider")[0].value == np.float32(
        metrics["steps"]["1"]["per_threshold"]["per_class"]["divider"][3])
    assert acc.Scalars("eval/train_iter_time_s")[0].value == 0.25 and acc.Scalars("eval/peak_memory_mib")[0].value > 10
    auroc = metrics["steps"]["3"]["uncertainty"]["auroc"]
    assert auroc is not None and np.isclose(acc.Scalars("eval/steps3/uncertainty_auroc")[0].value, auroc)
    assert written["eval/steps1/mIoU@0.50"] == metrics["steps"]["1"]["summary"]["mIoU@0.50"]

    assert {"eval/map_steps1", "eval/map_steps3"} <= set(acc.Tags()["images"])
    event = acc.Images("eval/map_steps3")[0]
    image = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(image, map_image(visuals, 3))
    assert image.shape == (10, 3 * 12 + 8, 3)  # rows: y (10), three panels of x (12) and two gaps

    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    step1 = next(r for r in records if r["kind"] == "eval/steps1")
    assert step1["IoU/walkway"] == best and "mIoU" in step1 and "uncertainty_auroc" in step1
    assert next(r for r in records if r["kind"] == "eval")["eval_time_s"] == 2.5


def test_map_image_panels_follow_the_ground_truth_prediction_and_uncertainty():
    gt = np.zeros((1, 6, 4, 3), np.uint8)
    gt[0, 0, 3, 0] = 1  # drivable area at the largest x and the smallest y
    visuals = {"kind": np.array("multilabel"), "steps": np.array([2]), "gt": gt,
               "probs_2": np.zeros((1, 6, 4, 3), np.float16), "uncertainty_2": np.ones((1, 4, 3), np.float16)}
    image = map_image(visuals, 2, gap=1)
    assert image.shape == (3, 4 * 3 + 2, 3)
    # x = 3 is the right-most column, y = 0 the bottom row; drivable_area is the first palette colour
    np.testing.assert_array_equal(image[2, 3], [31, 119, 180])
    assert (image[:, 5:9] == 255).all()  # an empty prediction is white
    assert (image[:, 10:] != 255).any()  # uncertainty 1 is coloured
