"""Checkpoint key reports, config validation, the grid transform and the ``info`` command."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from bev_ddp.bev.build import build_bev_model
from bev_ddp.nn.checkpoint import CheckpointMismatchWarning, load_weights
from bev_ddp.bev.grid import BEVGridTransform
from bev_ddp.cli import main as cli_main
from bev_ddp.errors import ConfigError, InputError

from bev_test_helpers import CONFIG_DIR, load_bev_config  # noqa: I001

pytestmark = pytest.mark.filterwarnings("ignore::bev_ddp.ops.ExtensionFallbackWarning")


@pytest.fixture(scope="module")
def camera_model():
    torch.manual_seed(0)
    return build_bev_model(load_bev_config("synth_tiny_camera_ddp.yaml"))


def test_checkpoint_report_lists_missing_unexpected_and_mismatched_keys(camera_model, tmp_path):
    state = {k: v.clone() for k, v in camera_model.state_dict().items()}
    missing_key = "head.ddp.decoder.head.1.weight"
    state.pop(missing_key)
    state["head.extra.weight"] = torch.zeros(3)
    state["fuser.bogus"] = torch.zeros(1)
    bad_shape_key = "decoder_neck.deblocks.0.0.weight"
    state[bad_shape_key] = torch.zeros(2, 2)
    state["camera.neck.fpn_convs.0.0.weight"] = state["camera.neck.fpn_convs.0.0.weight"] + 1.0
    path = tmp_path / "model.pth"
    torch.save({"state_dict": state, "meta": {"iter": 3}}, path)

    torch.manual_seed(1)
    target = build_bev_model(load_bev_config("synth_tiny_camera_ddp.yaml"))
    with pytest.warns(CheckpointMismatchWarning, match="missing in checkpoint"):
        report = load_weights(target, path)
    assert report.missing == [missing_key]  # the mismatched key is listed under shape_mismatch only
    assert report.unexpected == ["fuser.bogus", "head.extra.weight"]
    assert report.shape_mismatch == [f"{bad_shape_key}: (2, 2) vs {tuple(camera_model.state_dict()[bad_shape_key].shape)}"]
    assert report.loaded == len(camera_model.state_dict()) - 2
    torch.testing.assert_close(target.camera.neck.fpn_convs[0][0].weight, state["camera.neck.fpn_convs.0.0.weight"])
    assert not torch.equal(target.head.ddp.decoder.head[1].weight, camera_model.head.ddp.decoder.head[1].weight)
    with pytest.raises(InputError, match="does not match the model exactly") as info:
        load_weights(target, path, strict=True)
    assert missing_key in str(info.value) and "head.extra.weight" in str(info.value)


def test_exact_checkpoint_and_config_checkpoint_keys(camera_model, tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"model": camera_model.state_dict()}, path)
    backbone_path = tmp_path / "backbone.pth"
    torch.save({f"backbone.{k}": v for k, v in camera_model.camera.backbone.model.state_dict().items()}, backbone_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointMismatchWarning)
        report = load_weights(build_bev_model(load_bev_config("synth_tiny_camera_ddp.yaml")), path, strict=True)
    assert report.exact and report.loaded == len(camera_model.state_dict())

    torch.manual_seed(5)
    full = build_bev_model(load_bev_config("synth_tiny_camera_ddp.yaml", f"model.checkpoint={path}"))
    for (name, a), b in zip(full.state_dict().items(), camera_model.state_dict().values()):
        assert torch.equal(a, b), name

    # a backbone-only file stored under a prefix, loaded through the config key
    from bev_ddp.nn.checkpoint import read_state_dict

    stripped = read_state_dict(backbone_path, prefix="backbone.")
    plain = tmp_path / "backbone_plain.pth"
    torch.save(stripped, plain)
    torch.manual_seed(7)
    model = build_bev_model(load_bev_config("synth_tiny_camera_ddp.yaml", f"model.camera.backbone_checkpoint={plain}"))
    for name, value in camera_model.camera.backbone.model.state_dict().items():
        assert torch.equal(model.camera.backbone.model.state_dict()[name], value), name
    # the prefixed file loads as it is: the matching prefix is found and stripped
    torch.manual_seed(9)
    model = build_bev_model(load_bev_config("synth_tiny_camera_ddp.yaml",
                                            f"model.camera.backbone_checkpoint={backbone_path}"))
    for name, value in camera_model.camera.backbone.model.state_dict().items():
        assert torch.equal(model.camera.backbone.model.state_dict()[name], value), name


def test_bad_checkpoint_files(camera_model, tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_weights(camera_model, tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        load_weights(camera_model, corrupt)
    other = tmp_path / "other.pth"
    torch.save({"a": 1}, other)
    with pytest.raises(InputError, match="no state dict"):
        load_weights(camera_model, other)
    with pytest.raises(InputError, match="no key starting with"):
        load_weights(camera_model, _saved(tmp_path, camera_model), prefix="backbone.")


def _saved(tmp_path, model):
    path = tmp_path / "ok.pth"
    torch.save(model.state_dict(), path)
    return path


def test_every_bev_config_loads_and_typos_name_close_matches(tmp_path):
    names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    assert {"nuscenes_fusion_ddp.yaml", "nuscenes_fusion_baseline.yaml", "nuscenes_camera_ddp.yaml",
            "nuscenes_lidar_ddp.yaml", "synth_tiny_fusion_ddp.yaml", "synth_tiny_camera_ddp.yaml",
            "synth_tiny_lidar_ddp.yaml", "synth_tiny_fusion_baseline.yaml"} <= set(names)
    for name in names:
        cfg = load_bev_config(name)
        assert cfg.task == "bev" and cfg.model.head.type in ("ddp", "baseline")
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"_base_: {CONFIG_DIR / 'synth_tiny_fusion_ddp.yaml'}\nmodel:\n  head:\n    ddp:\n      dept: 3\n")
    with pytest.raises(ConfigError, match=r"model\.head\.ddp\.dept.*did you mean model\.head\.ddp\.depth"):
        load_bev_config(str(typo))
    with pytest.raises(ConfigError, match="did you mean"):
        load_bev_config("synth_tiny_fusion_ddp.yaml", "model.camera.bev_chanels=8")


def test_model_config_errors_are_clear():
    with pytest.raises(ConfigError, match="model.head.type"):
        build_bev_model(load_bev_config("synth_tiny_camera_ddp.yaml", "model.head.type=unet"))
    with pytest.raises(ConfigError, match="model.modalities"):
        build_bev_model(load_bev_config("synth_tiny_camera_ddp.yaml", "model.modalities=[radar]"))
    with pytest.raises(ConfigError, match="must match for fusion"):
        build_bev_model(load_bev_config("synth_tiny_fusion_ddp.yaml", "model.camera.downsample=1"))
    with pytest.raises(ConfigError, match="sparse_shape"):
        build_bev_model(load_bev_config("synth_tiny_lidar_ddp.yaml", "model.lidar.sparse_shape=[128,256,21]"))


def test_grid_transform_resamples_metric_positions():
    # identical scopes: identity
    same = BEVGridTransform(input_scope=[[-4, 4, 1], [-4, 4, 1]], output_scope=[[-4, 4, 1], [-4, 4, 1]])
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(same(x), x)
    # BEVFusion's: a map linear in x (metres) on the 0.8 m grid reads the same function at 0.5 m centres
    grid = BEVGridTransform(input_scope=[[-51.2, 51.2, 0.8], [-51.2, 51.2, 0.8]],
                            output_scope=[[-50, 50, 0.5], [-50, 50, 0.5]])
    centres_in = torch.arange(128) * 0.8 - 51.2 + 0.4
    field = (2.0 * centres_in + 1.0).view(1, 1, 128, 1).expand(1, 1, 128, 128)  # f = 2x + 1, constant in y
    out = grid(field.contiguous())
    assert out.shape == (1, 1, 200, 200)
    centres_out = torch.arange(200) * 0.5 - 50 + 0.25
    expected = (2.0 * centres_out + 1.0).view(200, 1).expand(200, 200)
    torch.testing.assert_close(out[0, 0], expected, rtol=1e-5, atol=1e-4)


def test_info_command_counts_parameters_per_part(capsys):
    code = cli_main(["info", str(CONFIG_DIR / "synth_tiny_fusion_baseline.yaml"), "--json", "--depth", "1"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    parts = {p["name"]: p["params"] for p in report["parts"]}
    assert set(parts) == {"camera", "lidar", "fuser", "decoder_backbone", "decoder_neck", "head"}
    assert sum(parts.values()) == report["total"] == report["trainable"]
    torch.manual_seed(0)
    model = build_bev_model(load_bev_config("synth_tiny_fusion_baseline.yaml"))
    assert parts["head"] == sum(p.numel() for p in model.head.parameters())
    code = cli_main(["info", str(CONFIG_DIR / "synth_tiny_fusion_baseline.yaml"), "model.head.tpye=ddp"])
    assert code == 2 and "did you mean model.head.type" in capsys.readouterr().err
