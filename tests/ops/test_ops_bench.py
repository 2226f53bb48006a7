"""`bev-ddp bench ops` at a tiny scale: every comparison is measured and printed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bev_ddp.bench.ops import OpsBenchSizes, frustum_coords, sizes_for_scale
from bev_ddp.cli import main


def test_frustum_coords_cover_the_grid_around_the_ego():
    sizes = OpsBenchSizes()
    coords = frustum_coords(sizes)
    assert coords.shape == (sizes.frustum_points, 4) and coords.dtype == torch.int32
    inside = (coords[:, :2] >= 0).all(1) & (coords[:, :2] < 256).all(1)
    assert 0.5 < inside.float().mean() < 1.0  # far depth bins leave the +-51.2 m grid
    x, y = coords[inside, 0], coords[inside, 1]
    assert x.min() < 40 and x.max() > 215 and y.min() < 40 and y.max() > 215  # all six directions


def test_bench_ops_small_scale(cpu_kernel, tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert main(["bench", "ops", "--scale", "0.01", "--repeats", "1", "--no-cuda", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for op in ("bev_pool forward", "bev_pool forward+backward", "ms_deform_attn forward",
               "ms_deform_attn forward+backward"):
        assert op in printed
    assert "% of copy bandwidth" in printed
    data = json.loads(out.read_text())
    assert [c["op"] for c in data["comparisons"]][:4] == ["bev_pool forward", "bev_pool forward+backward",
                                                           "ms_deform_attn forward", "ms_deform_attn forward+backward"]
    assert all(c["kernel_s"] > 0 and c["reference_s"] > 0 for c in data["comparisons"])
    assert data["bandwidth"]["fraction_of_copy"] > 0


@pytest.mark.parametrize("argv", [["bench", "ops", "--scale", "0"], ["bench", "ops", "--repeats", "0"]])
def test_bench_bad_options_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_sizes_for_scale_shrinks_points_and_queries():
    small = sizes_for_scale(0.25)
    full = OpsBenchSizes()
    assert small.frustum_points < full.frustum_points and small.bev_h * small.bev_w < full.bev_h * full.bev_w


def _thp_mode() -> str | None:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii").read()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")]


@pytest.mark.skipif(_thp_mode() != "madvise", reason="needs transparent huge pages in madvise mode")
@pytest.mark.parametrize("setting, expected", [("1", True), ("0", False)])
def test_huge_page_probe_follows_torch_setting(setting, expected):
    """The bench's page line tells torch's THP_MEM_ALLOC_ENABLE apart (set before torch allocates)."""
    code = "from bev_ddp.bench.ops import cpu_tensors_on_huge_pages as f; print(f())"
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": setting}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(expected)


def test_ms_deform_attn_bench_keeps_the_level_table_on_the_host():
    """The compiled kernels take (spatial_shapes, level_start_index) on the CPU for every device."""
    from bev_ddp.bench.ops import ms_deform_attn_inputs, sizes_for_scale

    value, shapes, starts, loc, attn = ms_deform_attn_inputs(sizes_for_scale(0.02), torch.device("meta"),
                                                             torch.Generator().manual_seed(0))
    assert value.is_meta and loc.is_meta and attn.is_meta
    assert shapes.device.type == "cpu" and starts.device.type == "cpu"
