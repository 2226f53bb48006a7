"""``bev-ddp bench model`` on the tiny config: every variant and stage is measured and consistent."""
from __future__ import annotations

import argparse
import json

import pytest

from bev_ddp.bench import model as bench_model
from bev_ddp.errors import InputError

from bev_test_helpers import CONFIG_DIR  # noqa: I001

pytestmark = pytest.mark.filterwarnings("ignore::bev_ddp.ops.ExtensionFallbackWarning")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_model.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_bench_reports_every_variant_with_ratios_to_the_baseline(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench_model.run(_args("--config", str(CONFIG_DIR / "synth_tiny_fusion_ddp.yaml"), "--steps", "1,2",
                                 "--points", "2000", "--threads", "1", "--out", str(out)))
    assert code == 0
    result = json.loads(out.read_text())
    names = [v["name"] for v in result["variants"]]
    assert names == ["baseline head", "DDP 1 step", "DDP 2 steps"]
    base = result["variants"][0]
    assert base["total_ratio"] == 1.0 and base["head_ratio"] == 1.0
    for v in result["variants"]:
        assert v["head_s"] > 0
        assert v["total_s"] == pytest.approx(result["encoder_s"] + v["head_s"])
        assert v["total_ratio"] == pytest.approx(v["total_s"] / base["total_s"])
    assert set(result["stages_s"]) >= {"camera backbone", "view transform (LSS + bev_pool + downsample)", "voxelize",
                                       "sparse encoder", "fuser", "SECOND", "SECONDFPN"}
    assert all(s > 0 for s in result["stages_s"].values())
    assert sum(result["stages_s"].values()) <= result["encoder_s"] * 1.01
    assert "encoder stages" in capsys.readouterr().out


def test_bench_rejects_bad_arguments():
    with pytest.raises(InputError, match="--steps"):
        bench_model.run(_args("--steps", "1,x"))
    with pytest.raises(InputError, match="--steps"):
        bench_model.run(_args("--steps", "0"))
