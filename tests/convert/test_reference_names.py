"""Each reference config's parameter names and shapes map one-to-one onto its manifest's."""
from __future__ import annotations

import pytest

from bev_ddp.bev.build import build_bev_model
from bev_ddp.bev.schema import BEVConfig
from bev_ddp.config import load_config
from bev_ddp.convert.bevfusion import DROPPED_KEYS
from bev_ddp.convert.names import REFERENCE_BACKBONE_PREFIX, reference_key_map
from bev_ddp.convert.swin import convert_swin_state_dict
from convert_helpers import REFERENCE, manifest, random_checkpoint  # noqa: I001

CASES = [
    ("bevfusion_seg_lidar", "bevfusion_lidar", []),
    ("bevfusion_seg_fusion", "bevfusion_fusion", []),
    ("bevfusion_seg_camera", "bevfusion_camera", []),
    ("ddp_bev_fusion", "ddp_fusion", []),
    ("ddp_bev_camera", "ddp_camera", []),
    ("variant_ddp_bev_fusion_with_seg_time_mlp_layer", "ddp_fusion", ["model.head.ddp.time_conditioning=true"]),
]


def _state(config: str, overrides: list[str]):
    return build_bev_model(load_config(REFERENCE / f"{config}.yaml", overrides, schema=BEVConfig)).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("name,config,overrides", CASES, ids=[c[0] for c in CASES])
def test_names_and_shapes_map_one_to_one(name, config, overrides):
    keys = manifest(name)["keys"]
    state = _state(config, overrides)
    key_map = reference_key_map(state)  # theirs -> ours, raises unless one-to-one
    expected = {k for k in keys if not k.startswith(REFERENCE_BACKBONE_PREFIX) and k not in DROPPED_KEYS}
    assert set(key_map) == expected
    for theirs, ours in key_map.items():
        shape = list(state[ours].shape)
        if len(shape) == 5:  # spconv 2.x [Cout, k0, k1, k2, Cin] vs 1.x [k0, k1, k2, Cin, Cout]
            shape = shape[1:] + shape[:1]
        assert shape == keys[theirs], theirs
    sub = {k[len(REFERENCE_BACKBONE_PREFIX):]: v for k, v in keys.items() if k.startswith(REFERENCE_BACKBONE_PREFIX)}
    if sub:  # the camera backbone: the Swin converter's names onto ours
        converted, _ = convert_swin_state_dict(random_checkpoint(sub))
        ours = {k[len("camera.backbone."):]: list(v.shape) for k, v in state.items() if k.startswith("camera.backbone.")}
        assert {k: list(v.shape) for k, v in converted.items()} == ours
