"""Published-layout checkpoint → ``bev-ddp convert`` → ``bev-ddp eval`` on the synthetic world."""
from __future__ import annotations

import json

import pytest
import torch

from bev_ddp.cli import main
from convert_helpers import REFERENCE, manifest, random_checkpoint  # noqa: I001


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from bev_ddp.data.synthetic import tiny_world
    from bev_ddp.data.create_infos import create_infos

    world = tiny_world(tmp_path_factory.mktemp("convert_world"), samples_per_scene=1)
    infos = create_infos(world, "v1.0-mini", tmp_path_factory.mktemp("convert_infos"))
    return world, infos["val"].parent


def _realistic(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Random weights scaled like trained ones (unit gains, zero shifts, 1/sqrt(fan-in) kernels),
    so the full model's activations stay finite."""
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value
        elif key.endswith(("running_mean", ".bias")):
            out[key] = torch.zeros_like(value)
        elif key.endswith("running_var") or value.dim() < 2:
            out[key] = torch.ones_like(value)
        else:
            out[key] = value * value[0].numel() ** -0.5
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name,config", [
    ("bevfusion_seg_lidar", "bevfusion_lidar"),
    ("bevfusion_seg_fusion", "bevfusion_fusion"),
])
def test_converted_reference_checkpoint_evaluates_on_the_synthetic_world(tmp_path, synthetic, capsys, name, config):
    world, info_dir = synthetic
    src, out = tmp_path / "published.pth", tmp_path / "converted.pth"
    torch.save({"state_dict": _realistic(random_checkpoint(manifest(name)["keys"]))}, src)
    assert main(["convert", str(src), str(out), "--from", "bevfusion"]) == 0, capsys.readouterr().err
    code = main(["eval", str(REFERENCE / f"{config}.yaml"), str(out), f"data.dataroot={world}",
                 f"data.info_dir={info_dir}", "--max-samples", "1", "--out", str(tmp_path / "eval"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "drivable_area" in json.dumps(metrics)  # per-class figures from a full pass of the converted model
    assert metrics["protocol"] == "conv head"
