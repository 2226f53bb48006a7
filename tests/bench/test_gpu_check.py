"""``bev-ddp bench gpu-check``: the GPU proof's script, run end to end on the CPU at toy sizes."""
from __future__ import annotations

import argparse
import json

import pytest

from bev_ddp.bench import gpu_check
from bev_ddp.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore::bev_ddp.ops.ExtensionFallbackWarning")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    gpu_check.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.slow
def test_cpu_tiny_run_passes_every_step_and_writes_both_summaries(tmp_path):
    assert gpu_check.run(_args("--device", "cpu", "--tiny", "--out", str(tmp_path))) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {step["name"]: step["status"] for step in report["steps"]}
    assert status == {name: "skipped" if name == "build" else "ok" for name, _, _ in gpu_check.STEPS}
    assert report["ok"] and report["device"] == "cpu" and report["machine"]["torch"]
    steps = {step["name"]: step for step in report["steps"]}
    losses = steps["amp-training"]["data"]["losses"]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    model = steps["bench-model-amp"]["data"]["result"]
    assert model["amp"] and [v["name"] for v in model["variants"]] == ["baseline head", "DDP 1 step", "DDP 2 steps"]
    compiled = steps["bench-compile"]["data"]["result"]
    assert [(r["runtime"], r["steps"]) for r in compiled["rows"]] == [("eager", 1), ("compile", 1), ("eager", 2),
                                                                       ("compile", 2)]
    assert all(r["max_abs_prob_diff"] <= 1e-4 for r in compiled["rows"])
    summary = (tmp_path / "gpu_check.md").read_text()
    assert summary.startswith("# gpu-check: PASSED") and "| bev_pool forward | cpu |" in summary
    assert "| compile | 2 |" in summary
    assert "| DDP 2 steps |" in summary and "AMP training losses" in summary
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed


def test_a_failing_step_fails_the_run_and_its_dependents(tmp_path, monkeypatch):
    def broken(settings):
        raise RuntimeError("no kernel image is available")

    steps = tuple((name, broken if name == "build" else fn, needs) for name, fn, needs in gpu_check.STEPS)
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    code = gpu_check.run(_args("--device", "cpu", "--tiny", "--out", str(tmp_path), "--only", "build,cuda-tests"))
    assert code == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    build, tests = report["steps"]
    assert build["status"] == "failed" and "no kernel image" in build["detail"]
    assert tests["status"] == "failed" and tests["detail"] == "not run: build failed"
    assert "# gpu-check: FAILED" in (tmp_path / "gpu_check.md").read_text()


def test_unknown_step_is_a_named_error(tmp_path):
    with pytest.raises(InputError, match="--only: unknown step"):
        gpu_check.run(_args("--device", "cpu", "--only", "warp-drive", "--out", str(tmp_path)))


def test_cuda_run_without_a_gpu_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="--device cuda: torch sees no CUDA device"):
        gpu_check.run(_args("--device", "cuda", "--out", str(tmp_path)))
