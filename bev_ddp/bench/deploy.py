"""``bev-ddp bench deploy``: latency of one BEV model in eager PyTorch, ``torch.compile`` and onnxruntime.

One process, one input (the synthetic batch of :mod:`bev_ddp.bench.model`: 6 images at the
config's size, a spinning-LiDAR cloud), random weights (seed 0).  For each DDP step count the
three runtimes predict the same batch with the same seed:

* ``eager``: ``BEVFusionModel.predict``;
* ``compile``: :class:`~bev_ddp.deploy.staged.CompiledBEVModel`, the camera stage and the map
  stage through ``torch.compile`` (``--compile-backend``, inductor by default; the LiDAR stage
  stays eager: spconv);
* ``onnxruntime``: :class:`~bev_ddp.deploy.onnx_backend.OnnxBEVModel` on the graphs of ``--onnx``
  (exported into a temporary folder first when not given; CPU only).

Reported per (runtime, steps): the median latency over ``--repeats`` after one untimed first call
(whose time, compilation or session start-up included, is reported too), the ratio to eager in the
same run, and the largest |Δ probability| against eager (the runtimes must agree, not only be
fast).  Absolute times depend on the machine's load; ratios much less so.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

DEFAULT_CONFIG = "configs/bev/nuscenes_fusion_ddp.yaml"
RUNTIMES = ("eager", "compile", "onnxruntime")


@dataclass
class LatencyRow:
    """One runtime at one step count: seconds, ratio to eager, parity with eager."""

    runtime: str
    steps: int
    latency_s: float
    first_call_s: float
    vs_eager: float | None = None
    max_abs_prob_diff: float | None = None


@dataclass
class DeployBenchResult:
    config: str
    device: str
    threads: int
    repeats: int
    export_s: float | None = None
    rows: list[LatencyRow] = field(default_factory=list)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[Any, float, float]:
    """(result of the first call, first-call seconds, median seconds of ``repeats`` further calls)."""
    def call():
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, time.perf_counter() - start

    out, first = call()
    times = [call()[1] for _ in range(repeats)]
    return out, first, statistics.median(times)


def bench_deploy(*, config: str, overrides: list[str], steps: list[int], repeats: int, points: int, threads: int,
                 device: str = "cpu", runtimes: tuple[str, ...] = RUNTIMES, onnx_dir: str | None = None,
                 compile_backend: str = "inductor") -> DeployBenchResult:
    from bev_ddp.bench.model import synthetic_batch
    from bev_ddp.bev.build import build_bev_model
    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.config import load_config
    from bev_ddp.deploy.staged import CompiledBEVModel
    from bev_ddp.engine.data import move_to_device

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    cfg = load_config(config, overrides, schema=BEVConfig)
    model = build_bev_model(cfg).eval()
    batch = synthetic_batch(image_size=tuple(cfg.data.image_size), num_cams=6, num_points=points,
                            extent=float(cfg.data.xbound[1]), seed=0)
    result = DeployBenchResult(config=config, device=str(dev), threads=threads, repeats=repeats)
    runners: dict[str, Any] = {}
    if "eager" in runtimes:
        runners["eager"] = model
    if "compile" in runtimes:
        runners["compile"] = CompiledBEVModel(model, backend=compile_backend)
    tmp = None
    if "onnxruntime" in runtimes and dev.type == "cpu":
        from bev_ddp.deploy.export import export_bev_model
        from bev_ddp.deploy.onnx_backend import OnnxBEVModel

        if onnx_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="bev_ddp_onnx_")
            start = time.perf_counter()
            export_bev_model(model, cfg, tmp.name, steps=steps, config_path=config)
            result.export_s = time.perf_counter() - start
        runners["onnxruntime"] = OnnxBEVModel(model, onnx_dir or tmp.name)
    model.to(dev)
    batch = move_to_device(batch, dev)
    try:
        for n in steps:
            eager_probs = None
            for name, runner in runners.items():
                with torch.no_grad():
                    preds, first, median = _timed(lambda r=runner: r.predict(batch, steps=[n], seed=0), dev, repeats)
                probs = preds[n].probs.float().cpu()
                row = LatencyRow(runtime=name, steps=n, latency_s=median, first_call_s=first)
                if name == "eager":
                    eager_probs, eager_s = probs, median
                if eager_probs is not None:
                    row.vs_eager = median / eager_s
                    row.max_abs_prob_diff = float((probs - eager_probs).abs().max())
                result.rows.append(row)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return result


def markdown_table(result: DeployBenchResult) -> str:
    lines = ["| runtime | steps | latency s | × eager | first call s | max abs Δ prob vs eager |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result.rows:
        ratio = "" if r.vs_eager is None else f"{r.vs_eager:.2f}×"
        diff = "" if r.max_abs_prob_diff is None else f"{r.max_abs_prob_diff:.1e}"
        lines.append(f"| {r.runtime} | {r.steps} | {r.latency_s:.3f} | {ratio} | {r.first_call_s:.1f} | {diff} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"BEV config (default {DEFAULT_CONFIG})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--steps", default="1,2", help="DDP sampling step counts (default 1,2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after the first call (default 3)")
    parser.add_argument("--points", type=int, default=250_000, help="LiDAR points in the cloud (default 250000)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch (and onnxruntime) threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]; onnxruntime runs on the CPU only")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"subset of {','.join(RUNTIMES)}")
    parser.add_argument("--onnx", default=None, help="an export folder of this config (default: export into a temp folder)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")


def run(args: argparse.Namespace) -> int:
    from bev_ddp.engine.evaluation import parse_steps
    from bev_ddp.errors import InputError
    from bev_ddp.output_files import write_text_atomic

    steps = parse_steps(args.steps)
    runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    if not runtimes or any(r not in RUNTIMES for r in runtimes) or runtimes[0] != "eager":
        raise InputError(f"--runtimes must start with eager and name only {', '.join(RUNTIMES)}, got {args.runtimes!r}")
    if args.repeats < 1 or args.threads < 1 or args.points < 0:
        raise InputError("--repeats and --threads must be >= 1 and --points >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA device is available")
    result = bench_deploy(config=args.config, overrides=list(args.overrides), steps=steps, repeats=args.repeats,
                          points=args.points, threads=args.threads, device=args.device, runtimes=runtimes,
                          onnx_dir=args.onnx, compile_backend=args.compile_backend)
    table = markdown_table(result)
    export = f"; export {result.export_s:.1f} s" if result.export_s is not None else ""
    print(f"{result.config} on {result.device}, {result.threads} threads, median of {result.repeats}{export}\n{table}")
    if args.out:
        write_text_atomic(args.out, json.dumps(asdict(result), indent=2))
    if args.markdown:
        write_text_atomic(args.markdown, table + "\n")
    return 0
