"""`bev-ddp convert --from bevfusion/ddp` against the reference manifests (random tensors, exact keys)."""
from __future__ import annotations

import pytest
import torch

from bev_ddp.cli import main
from bev_ddp.convert.bevfusion import DROPPED_KEYS
from bev_ddp.convert.names import reference_key_map

from convert_helpers import REFERENCE, manifest, random_checkpoint  # noqa: I001


# manifest -> (--from, reference config)
CASES = {
    "bevfusion_seg_fusion": ("bevfusion", "bevfusion_fusion"),
    "bevfusion_seg_camera": ("bevfusion", "bevfusion_camera"),
    "bevfusion_seg_lidar": ("bevfusion", "bevfusion_lidar"),
    "ddp_bev_fusion": ("ddp", "ddp_fusion"),
    "ddp_bev_camera": ("ddp", "ddp_camera"),
    "variant_ddp_bev_fusion_with_seg_time_mlp_layer": ("ddp", "ddp_fusion"),
}


def _convert(tmp_path, state, source, *extra):
    src, out = tmp_path / "src.pth", tmp_path / "out.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 20}}, src)
    return main(["convert", str(src), str(out), "--from", source, *extra]), out


def _check_converted(state, out_path, *, map_first: bool = False):
    """Every value moved with its name (the strict load is the convert's own); ``map_first``: the
    target fuses ``cat([map, features])``, so DDP's fuse-conv columns were swapped."""
    converted = torch.load(out_path, weights_only=True)["model"]
    key_map = reference_key_map(converted.keys())  # their -> ours
    for theirs, ours in key_map.items():
        value = state[theirs]
        if value.dim() == 5:  # spconv 1.x -> 2.x
            value = value.permute(4, 0, 1, 2, 3)
        if theirs == "transform.conv.weight" and map_first:  # [features, map] -> [map, features]
            value = torch.cat([value[:, -256:], value[:, :-256]], dim=1)
        assert torch.equal(converted[ours].to(value.dtype), value), theirs
    return converted


def test_lidar_manifest_converts_and_loads_strictly(tmp_path, capsys):
    keys = manifest("bevfusion_seg_lidar")["keys"]
    state = random_checkpoint(keys)
    code, out = _convert(tmp_path, state, "bevfusion")
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "transformed: 21" in printed  # every sparse conv weight (conv_input, 4 x 4 block convs, 3 down, conv_out)
    converted = _check_converted(state, out)
    assert len(converted) == len(keys)
    assert converted["lidar.sparse_encoder.conv_out.1.num_batches_tracked"].dtype == torch.int64


@pytest.mark.parametrize("mutation", ["rename", "drop"])
def test_a_renamed_or_missing_source_key_exits_2_naming_it(tmp_path, capsys, mutation):
    state = random_checkpoint(manifest("bevfusion_seg_lidar")["keys"])
    key = "decoder.neck.deblocks.1.1.running_mean"
    value = state.pop(key)
    if mutation == "rename":
        state["decoder.neck.deblocks.1.1.running_avg"] = value
    code, out = _convert(tmp_path, state, "bevfusion")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert len(err.strip().splitlines()) == 1
    assert ("decoder.neck.deblocks.1.1.running_avg" if mutation == "rename" else key) in err


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CASES if n != "bevfusion_seg_lidar"])
def test_every_manifest_converts_and_loads_strictly(tmp_path, capsys, name):
    source, config = CASES[name]
    keys = manifest(name)["keys"]
    state = random_checkpoint(keys)
    # the variant goes through the automatic choice (ddp_fusion + per-layer time MLPs)
    extra = [] if name.startswith("variant") else ["--config", str(REFERENCE / f"{config}.yaml")]
    code, out = _convert(tmp_path, state, source, *extra)
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for key in DROPPED_KEYS:
        assert f"dropped {key}" in printed
    converted = _check_converted(state, out)
    assert any(k.startswith("camera.backbone.") for k in converted)


@pytest.mark.slow
def test_ddp_weights_load_into_our_default_head_with_the_fuse_columns_swapped(tmp_path, capsys):
    """The variant with per-layer time MLPs fits our recommended DDP config (FiLM in every layer,
    ``cat([map, features])``) once its output conv is the authors' 1x1: the fuse conv's input
    columns are reordered.  With our default 3x3 output conv the strict load names that conv."""
    state = random_checkpoint(manifest("variant_ddp_bev_fusion_with_seg_time_mlp_layer")["keys"])
    ours = REFERENCE.parent / "nuscenes_fusion_ddp.yaml"
    code, _ = _convert(tmp_path, state, "ddp", "--config", str(ours))
    assert code == 2 and "head.ddp.decoder.head.1.weight" in capsys.readouterr().err
    config = tmp_path / "ours_1x1.yaml"
    config.write_text(f"_base_: {ours}\nmodel:\n  head:\n    ddp:\n      head_kernel: 1\n")
    code, out = _convert(tmp_path, state, "ddp", "--config", str(config))
    assert code == 0, capsys.readouterr().err
    assert "transformed transform.conv.weight: input columns [features, map] -> [map, features]" in capsys.readouterr().out
    _check_converted(state, out, map_first=True)
