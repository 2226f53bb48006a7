"""Output files (MCAP for Foxglove, JSONL) and the latency-budget step controller."""
from __future__ import annotations

import json

import numpy as np
import pytest
from mcap.reader import make_reader

from bev_ddp.replay import foxglove, render
from bev_ddp.replay.controller import StepController
from bev_ddp.replay.outputs import FrameRecord, GridSpec, ReplayOutputs, quantise

CLASSES = ["drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider"]


def _record(index: int, **kw) -> FrameRecord:
    return FrameRecord(index=index, stamp_ns=1_000 + index, flags=[], camera_valid={"CAM_FRONT": True}, sweeps=1, **kw)


def read_mcap(path) -> dict[str, list[tuple[str, int, object]]]:
    """topic → [(schema name, log time, message)] of a finished MCAP file: JSON channels as dicts,
    protobuf channels decoded with the schema embedded in the file."""
    from mcap_protobuf.decoder import DecoderFactory

    out: dict[str, list] = {}
    factory = DecoderFactory()
    with open(path, "rb") as stream:
        for schema, channel, message in make_reader(stream).iter_messages():
            if channel.message_encoding == "json":
                decoded = json.loads(message.data)
            else:
                decoded = factory.decoder_for(channel.message_encoding, schema)(message.data)
            out.setdefault(channel.topic, []).append((schema.name, message.log_time, decoded))
    return out


def test_outputs_write_foxglove_messages_and_jsonl(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=(6, 8, 10)).astype(np.float32)  # [C, X, Y], X != Y to catch transposes
    uncertainty = rng.uniform(size=(8, 10)).astype(np.float32)
    grid = GridSpec(xbound=(-4.0, 4.0, 1.0), ybound=(-5.0, 5.0, 1.0))
    with ReplayOutputs(tmp_path, class_names=CLASSES, grid=grid, png=True, mp4=True, fps=5) as out:
        out.write(_record(0, steps=2, latency_ms=12.5), "LIDAR_TOP", probs, uncertainty)
        skipped = _record(1)
        skipped.flags = ["lidar_corrupt", "skipped"]
        out.write(skipped, "LIDAR_TOP", None, None)
    topics = read_mcap(tmp_path / "replay.mcap")
    (schema, stamp, grid_msg), = topics["/bev/probabilities"]
    assert schema == "foxglove.Grid" and stamp == 1_000
    assert grid_msg["column_count"] == 8 and grid_msg["cell_size"] == {"x": 1.0, "y": 1.0}
    assert grid_msg["pose"]["position"]["x"] == -4.0 and grid_msg["pose"]["position"]["y"] == -5.0
    values = foxglove.grid_values(grid_msg)
    for k, name in enumerate(CLASSES):
        np.testing.assert_array_equal(values[name], quantise(probs[k]))
    np.testing.assert_array_equal(foxglove.grid_values(topics["/bev/uncertainty"][0][2])["uncertainty"],
                                  quantise(uncertainty))
    assert topics["/bev/argmax"][0][0] == "foxglove.CompressedImage" and topics["/bev/argmax"][0][2]["format"] == "png"
    frames = [m for _, _, m in topics["/bev/frame"]]
    assert [f["index"] for f in frames] == [0, 1] and frames[1]["flags"] == ["lidar_corrupt", "skipped"]
    lines = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [line["latency_ms"] for line in lines] == [12.5, None]
    assert (tmp_path / "frames" / "000000.png").is_file() and not (tmp_path / "frames" / "000001.png").exists()
    assert (tmp_path / "replay.mp4").stat().st_size > 0


def test_mcap_is_finished_when_the_writer_exits_by_an_exception(tmp_path):
    probs = np.zeros((6, 4, 4), np.float32)
    with pytest.raises(KeyboardInterrupt):
        with ReplayOutputs(tmp_path, class_names=CLASSES, grid=GridSpec()) as out:
            out.write(_record(0, steps=1, latency_ms=1.0), "LIDAR_TOP", probs, probs[0])
            raise KeyboardInterrupt
    assert [m[2]["index"] for m in read_mcap(tmp_path / "replay.mcap")["/bev/frame"]] == [0]


def test_argmax_image_is_a_top_view_with_the_heading_up():
    probs = np.zeros((6, 4, 3), np.float32)  # [C, X, Y]; LiDAR x to the right, y forward
    probs[1, 0, 2] = 0.9  # ped_crossing at the smallest x (left) and largest y (front)
    probs[2, 3, 0] = 0.9  # walkway at the right, behind
    probs[0, 0, 0] = 0.4  # below the threshold: background
    image = render.colourise_labels(render.argmax_labels(probs))
    assert image.shape == (3, 4, 3)  # [H = Y, W = X, RGB]
    np.testing.assert_array_equal(image[0, 0], render.CLASS_COLOURS[1])  # top-left pixel
    np.testing.assert_array_equal(image[2, 3], render.CLASS_COLOURS[2])  # bottom-right pixel
    np.testing.assert_array_equal(image[2, 0], render.BACKGROUND)


def test_controller_without_budget_uses_the_requested_steps():
    controller = StepController(max_steps=4)
    controller.observe(4, 1000.0)
    assert controller.choose() == 4


def test_controller_fits_base_and_step_cost_and_follows_a_slowdown():
    base, per_step = 20.0, 10.0
    controller = StepController(max_steps=8, budget_ms=65.0, decay=0.7)
    chosen = []
    for _ in range(12):
        k = controller.choose()
        chosen.append(k)
        controller.observe(k, base + per_step * k)
    estimate = controller.estimate()
    assert estimate.base_ms == pytest.approx(base, rel=1e-6) and estimate.step_ms == pytest.approx(per_step, rel=1e-6)
    assert chosen[0] == 1 and chosen[-1] == 4  # 20 + 4·10 = 60 ≤ 65 < 70
    assert all(base + per_step * k <= 65.0 for k in chosen)  # the conservative start never overshoots
    for _ in range(20):  # the machine becomes twice as slow
        k = controller.choose()
        controller.observe(k, 2 * (base + per_step * k))
    assert controller.choose() == 1  # 2·(20 + 10) = 60 fits, 2·(20 + 20) = 80 does not


def test_controller_probes_one_step_more_to_learn_a_large_fixed_cost():
    base, per_step = 200.0, 20.0  # the proportional guess (220 ms per step) would never leave 1 step
    controller = StepController(max_steps=8, budget_ms=305.0)
    chosen = []
    for _ in range(6):
        k = controller.choose()
        chosen.append(k)
        controller.observe(k, base + per_step * k)
    assert chosen[:3] == [1, 2, 5] and chosen[-1] == 5  # 200 + 5·20 = 300 fits, 320 does not


def test_controller_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_steps"):
        StepController(max_steps=0)
    with pytest.raises(ValueError, match="budget"):
        StepController(max_steps=2, budget_ms=0.0)
