"""ONNX export + onnxruntime backend against the eager PyTorch model (the oracle), same seed.

Tiny synthetic configs (fusion DDP, camera DDP, fusion baseline): the exported graphs pass
``onnx.checker``; on random synthetic samples and on the real nuScenes keyframe
(``../shared/real/nuscenes_keyframe``) max |Δ probability| <= 1e-4, the uncertainty maps are equal
and the per-class IoU of the BEV evaluator agrees to 4 decimals.  A fingerprint mismatch between
the export and the given config/checkpoint is exit 2 naming both.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from bev_ddp import cli
from bev_ddp.api import build_batch, init_model
from bev_ddp.bev.heads import DDPBEVHead
from bev_ddp.data.structures import collate_samples
from bev_ddp.deploy.export import EXPORT_FILE, config_fingerprint
from bev_ddp.deploy.onnx_backend import OnnxBEVModel, read_manifest
from bev_ddp.metrics.bev_iou import BEVIoUEvaluator

from bev_test_helpers import CONFIG_DIR, random_sample  # noqa: I001

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::bev_ddp.bev.model.DegradedInputWarning")]

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real" / "nuscenes_keyframe"
TINY = dict(image_size=(96, 176), num_points=3000, grid=(64, 64), extent=32.0)
CASES = {  # config -> exported step counts
    "synth_tiny_fusion_ddp.yaml": "1,2",
    "synth_tiny_camera_ddp.yaml": "2",
    "synth_tiny_fusion_baseline.yaml": "1",
}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    """(config path, checkpoint, export folder, eager model): random weights saved as a checkpoint,
    exported with the `bev-ddp export` command."""
    config = CONFIG_DIR / request.param
    folder = tmp_path_factory.mktemp(Path(request.param).stem)
    torch.manual_seed(0)
    model = init_model(config, overrides=["model.head.ddp.depth=1"])
    checkpoint = folder / "model.pth"
    torch.save(model.state_dict(), checkpoint)
    code = cli.main(["export", str(config), str(checkpoint), "--out", str(folder / "onnx"), "--steps",
                     CASES[request.param], "model.head.ddp.depth=1"])
    assert code == 0
    return config, checkpoint, folder / "onnx", model


def _iou(model, batch, preds, steps):
    evaluator = BEVIoUEvaluator(classes=tuple(model.cfg.data.classes), steps=steps)
    evaluator.process(batch, preds)
    return evaluator.evaluate()


def _compare(model, onnx_model, batch, steps):
    want = model.predict(batch, steps=steps, seed=3)
    got = onnx_model.predict(batch, steps=steps, seed=3)
    for n in steps:
        assert (got[n].probs - want[n].probs).abs().max().item() <= 1e-4
        assert torch.equal(got[n].uncertainty, want[n].uncertainty)
        assert len(got[n].step_probs) == len(want[n].step_probs)
    return want, got


def test_graphs_pass_the_checker_and_the_manifest_says_what_they_are(exported):
    config, _, folder, model = exported
    manifest = read_manifest(folder)
    files = [folder / g["file"] for g in manifest["graphs"].values()]
    for path in files:
        onnx.checker.check_model(str(path), full_check=True)
    assert manifest["config_fingerprint"] == config_fingerprint(model.cfg)
    assert manifest["modalities"] == list(model.modalities)
    if isinstance(model.head, DDPBEVHead):
        assert manifest["steps"] == [int(s) for s in CASES[config.name].split(",")]
        graph = onnx.load(str(folder / f"map_s{manifest['steps'][-1]}.onnx"))
        assert [i.name for i in graph.graph.input][-1] == "noise"  # the start map is an input
        assert manifest["noise_shape"][0] == 1
    else:
        assert set(manifest["graphs"]) == {"camera", "map"}
    # the LiDAR stage stays in PyTorch: no graph for it
    assert not any("lidar" in name for name in manifest["graphs"])


def test_onnxruntime_matches_eager_on_synthetic_samples(exported):
    _, _, folder, model = exported
    onnx_model = OnnxBEVModel(model, folder)
    steps = read_manifest(folder)["steps"] or [1]
    size = model.camera.view_transform.image_size if model.camera is not None else TINY["image_size"]
    batch = collate_samples([random_sample(seed=i, **{**TINY, "image_size": size}) for i in range(2)])
    batch["camera_valid"][1, 2] = False  # a missing camera follows the same path in both runtimes
    with torch.no_grad():
        want, got = _compare(model, onnx_model, batch, steps)
    want_iou, got_iou = _iou(model, batch, want, steps), _iou(model, batch, got, steps)
    for n in steps:
        a = want_iou["steps"][str(n)]["per_threshold"]["per_class"]
        b = got_iou["steps"][str(n)]["per_threshold"]["per_class"]
        assert {c: np.round(v, 4).tolist() for c, v in a.items()} == {c: np.round(v, 4).tolist() for c, v in b.items()}


def _keyframe_inputs() -> dict:
    from PIL import Image

    info = pickle.loads((REAL / "n015-2018-07-24-11-22-45+0800.pkl").read_bytes())["data_list"][0]
    names = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
    cams = [info["images"][n] for n in names]
    points = np.fromfile(REAL / Path(info["lidar_points"]["lidar_path"]).name, dtype=np.float32).reshape(-1, 5)
    return {
        "images": [np.asarray(Image.open(REAL / Path(c["img_path"]).name).convert("RGB")) for c in cams],
        "points": points[:, :4],
        "intrinsics": np.array([np.asarray(c["cam2img"])[:3, :3] for c in cams]),
        "camera2lidar": np.array([np.linalg.inv(np.asarray(c["lidar2cam"])) for c in cams]),
        "lidar2ego": np.asarray(info["lidar_points"]["lidar2ego"]),
    }


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real nuScenes keyframe not found at {REAL}")
def test_onnxruntime_matches_eager_on_the_real_keyframe(exported):
    _, _, folder, model = exported
    batch = build_batch(model, **_keyframe_inputs())
    steps = read_manifest(folder)["steps"] or [1]
    with torch.no_grad():
        _compare(model, OnnxBEVModel(model, folder), batch, steps)


def test_fingerprint_mismatch_is_exit_2_naming_both(exported, tmp_path, capsys):
    config, checkpoint, folder, model = exported
    other = {k: (v + 1 if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(other, tmp_path / "other.pth")
    args = ["eval", str(config), str(tmp_path / "other.pth"), "--backend", "onnxruntime", "--onnx", str(folder),
            "--out", str(tmp_path / "eval"), "model.head.ddp.depth=1"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint" in err[0]
    recorded = read_manifest(folder)["checkpoint_fingerprint"]
    assert recorded in err[0] and str(checkpoint) in err[0] and "other.pth" in err[0]
    # same weights, another config: the config fingerprint differs
    args = ["eval", str(config), str(checkpoint), "--backend", "onnxruntime", "--onnx", str(folder),
            "--out", str(tmp_path / "eval"), "model.head.ddp.depth=1", "model.head.focal_alpha=0.5"]
    assert cli.main(args) == 2
    assert "config" in capsys.readouterr().err


def test_api_takes_the_backend(exported):
    config, checkpoint, folder, model = exported
    onnx_model = init_model(config, checkpoint, overrides=["model.head.ddp.depth=1"], backend="onnxruntime", onnx=folder)
    assert isinstance(onnx_model, OnnxBEVModel) and onnx_model.cfg is not None
    assert (Path(folder) / EXPORT_FILE).is_file()


@pytest.fixture(scope="module")
def synthetic_world(tmp_path_factory):
    """A two-scene synthetic world with info files (one scene held out as the val split)."""
    from bev_ddp.data.create_infos import create_infos
    from bev_ddp.data.synthetic import generate_world

    root = generate_world(tmp_path_factory.mktemp("world") / "w", num_scenes=2, samples_per_scene=2, seed=0,
                          image_size=(96, 176), lidar_azimuth_steps=90)
    create_infos(root, "v1.0-mini", root / "infos", max_sweeps=2)
    return root


def test_eval_command_gives_the_same_report_on_both_backends(exported, synthetic_world, tmp_path):
    """`bev-ddp eval` on the synthetic val split: per-class IoU at every threshold equal to 4 decimals."""
    config, checkpoint, folder, model = exported
    if config.name != "synth_tiny_fusion_ddp.yaml":
        pytest.skip("one config is enough for the command path (the others are covered sample by sample)")
    common = [str(config), str(checkpoint), "--steps", "1,2", "--no-progress", "model.head.ddp.depth=1",
              f"data.dataroot={synthetic_world}", f"data.info_dir={synthetic_world / 'infos'}"]
    assert cli.main(["eval", *common, "--out", str(tmp_path / "torch")]) == 0
    assert cli.main(["eval", *common, "--out", str(tmp_path / "ort"), "--backend", "onnxruntime",
                     "--onnx", str(folder)]) == 0
    import json

    want = json.loads((tmp_path / "torch" / "metrics.json").read_text())
    got = json.loads((tmp_path / "ort" / "metrics.json").read_text())
    assert want["num_samples"] == got["num_samples"] > 0
    for n in ("1", "2"):
        a = want["steps"][n]["per_threshold"]["per_class"]
        b = got["steps"][n]["per_threshold"]["per_class"]
        assert {c: np.round(v, 4).tolist() for c, v in a.items()} == {c: np.round(v, 4).tolist() for c, v in b.items()}
