"""The public Python API: lazy import, the README example run as written, and parity of its two
input paths with the dataset's sample."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bev_ddp
from bev_ddp.config import to_dict
from bev_ddp.data.synthetic import tiny_world
from bev_ddp.data.create_infos import create_infos

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/bev/synth_tiny_fusion_ddp.yaml"


def test_import_is_light_and_the_api_is_exported():
    code = "import sys, bev_ddp; assert 'torch' not in sys.modules, 'import bev_ddp pulled in torch'; print(dir(bev_ddp))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    for name in ("init_model", "inference_bev", "build_batch", "read_infos"):
        assert name in out.stdout and callable(getattr(bev_ddp, name))
    with pytest.raises(AttributeError):
        bev_ddp.no_such_thing  # noqa: B018


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder laid out as the README example expects: configs, data/synth with infos, a checkpoint."""
    root = tmp_path_factory.mktemp("api")
    (root / "configs").symlink_to(ROOT / "configs")
    world = tiny_world(root / "data", samples_per_scene=1)
    create_infos(world, "v1.0-mini", world / "infos")
    torch.manual_seed(0)
    model = bev_ddp.init_model(ROOT / CONFIG)
    ckpt = root / "work_dirs" / "synth_tiny_fusion_ddp" / "latest.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": to_dict(model.cfg)}, ckpt)  # a checkpoint with its config
    return root


def test_the_readme_example_runs_as_written(workspace, monkeypatch):
    text = (ROOT / "bev_ddp" / "README_api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    monkeypatch.chdir(workspace)
    scope: dict = {}
    exec(compile(code, "README_api.md", "exec"), scope)  # noqa: S102 - the documented example itself
    pred = scope["pred"]
    assert pred.probs.shape == (1, 6, 64, 64) and pred.uncertainty.shape == (1, 64, 64)
    assert torch.isfinite(pred.probs).all() and 0 <= float(pred.probs.min()) <= float(pred.probs.max()) <= 1


def test_info_record_and_raw_inputs_give_the_dataset_prediction(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    model = bev_ddp.init_model(CONFIG, "work_dirs/synth_tiny_fusion_ddp/latest.pth", overrides=["data.load_sweeps=1"])
    assert model.cfg.data.load_sweeps == 1 and not model.training
    from bev_ddp.bev.task import BEVTask
    from bev_ddp.data.structures import collate_samples

    dataset = BEVTask().build_dataset(model.cfg, "val")
    with torch.inference_mode():
        expected = model.predict(collate_samples([dataset[0]]), steps=[2], seed=5)[2]
    info = dataset.infos[0]
    from_info = bev_ddp.inference_bev(model, info, steps=2, seed=5)
    torch.testing.assert_close(from_info.probs, expected.probs, rtol=0, atol=0)
    torch.testing.assert_close(from_info.uncertainty, expected.uncertainty, rtol=0, atol=0)

    root = workspace / "data" / "synth"
    cams = [info["cams"][name] for name in bev_ddp.CAMERA_NAMES]
    raw = dict(
        images=[np.asarray(Image.open(root / c["path"]).convert("RGB")) for c in cams],
        points=np.fromfile(root / info["lidar_path"], dtype="<f4").reshape(-1, 5)[:, :4],
        intrinsics=np.stack([np.asarray(c["intrinsics"])[:3, :3] for c in cams]),
        camera2lidar=np.stack([np.asarray(c["camera2lidar"]) for c in cams]),
        lidar2ego=np.asarray(info["lidar2ego"]),
    )
    from_raw = bev_ddp.inference_bev(model, raw, steps=2, seed=5)
    torch.testing.assert_close(from_raw.probs, expected.probs, rtol=0, atol=1e-5)
    batch = bev_ddp.build_batch(model, **raw)
    assert batch["img"].shape == (1, 6, 3, 96, 176) and batch["points"][0].shape[1] == 5
    from_batch = bev_ddp.inference_bev(model, dataset[0], steps=2, seed=5)  # one dataset sample as it comes
    torch.testing.assert_close(from_batch.probs, expected.probs, rtol=0, atol=0)
    with pytest.raises(bev_ddp.api.InputError, match="6 images"):
        bev_ddp.build_batch(model, **{**raw, "images": raw["images"][:5]})
