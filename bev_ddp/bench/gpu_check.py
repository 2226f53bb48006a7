"""``bev-ddp bench gpu-check`` (``make gpu-check``): the whole GPU proof as one command.

On a machine with a GPU, from a clean checkout, in well under 8 minutes, the check

1. ``environment``: the Python packages the later steps import (a missing one fails that step
   with its name, it never hides as a skip);
2. ``build``: compiles both extensions in place (``setup.py build_ext --inplace``, the visible
   GPU's architecture) and checks that both ops run their CUDA kernels;
3. ``cuda-tests``: the CUDA tests (``pytest -m cuda tests/ops tests/nn``; none may skip);
4. ``bench-ops``: ``bev-ddp bench ops`` on CUDA (kernel vs reference, bandwidth vs a device copy);
5. ``bench-model-fp32`` / ``bench-model-amp``: ``bev-ddp bench model`` on CUDA for the full fusion
   config, baseline head vs DDP 1/3/5 steps, latency and peak memory, without and with autocast;
   ``bench-compile``: ``bev-ddp bench deploy --runtimes eager,compile`` on CUDA, the whole model
   eager vs ``torch.compile`` at 1 and 2 DDP steps (latency ratio and |Δ probability|);
6. ``sampling-no-sync``: ``DDPHead.predict_many(steps=[1, 3, 5])`` at the BEV decoder's size under
   :func:`bev_ddp.bench.host_sync.forbid_host_sync` (CUDA's sync debug mode set to "error");
7. ``amp-training``: a few autocast training iterations of the fusion config on one synthetic batch
   (float16 + GradScaler on CUDA, as the trainer; bfloat16 on the CPU); every loss must be finite
   and the last ones lower than the first;
8. ``two-process``: a two-process job (nccl on two GPUs; gloo on the CPU; skipped with one GPU):
   an all-reduce and one DistributedDataParallel step whose gradients must agree across ranks.

It writes ``gpu_check.json`` and ``gpu_check.md`` to ``$OUT`` when set, else to
``work_dirs/gpu_check/<UTC time>/``, and exits 1 when any step failed.  ``--device cpu --tiny``
runs the same steps on the CPU at toy sizes (no build, CUDA tests skipped), which CI does, so the
script cannot rot.  On CUDA the heavy steps run as subprocesses of the real commands, with a time
limit each (on the CPU the bench suites run in this process).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[2]
FULL_CONFIG = "configs/bev/nuscenes_fusion_ddp.yaml"
TINY_CONFIG = "configs/bev/synth_tiny_fusion_ddp.yaml"
# modules the steps import (the BEV model's own imports, not all of requirements.txt); spconv only
# when the config has a LiDAR branch
NEEDED_MODULES = ("numpy", "omegaconf", "timm", "rich", "yaml", "torchvision", "pytest")
LIBRARY_MODULES = ("bev_ddp.cli", "bev_ddp.engine.cli_support", "bev_ddp.bev.build")


@dataclass
class StepResult:
    """One step of the check: ``status`` is "ok", "failed" or "skipped" (with the reason in ``detail``)."""

    name: str
    status: str
    seconds: float
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    cpu_s: float = 0.0  # CPU time of this process and its subprocesses


@dataclass
class Settings:
    device: torch.device
    tiny: bool
    config: str
    out_dir: Path
    build: bool
    step_timeout_s: int


# -- helpers ----------------------------------------------------------------------------------------
def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _run(argv: list[str], timeout_s: int, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a subprocess in the repository root; returns (exit code, last 3000 characters of its output)."""
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=env or _python_env(), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, f"timed out after {timeout_s} s\n{out[-3000:]}"
    return proc.returncode, (proc.stdout + proc.stderr)[-3000:]


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished subprocesses."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _bench(s: Settings, suite: str, args: list[str]) -> tuple[int, str]:
    """``bev-ddp bench SUITE ARGS``: a subprocess on CUDA (clean memory statistics, a crash stays
    contained); in this process on the CPU, which saves an interpreter start per suite in CI."""
    if s.device.type == "cuda":
        return _run([sys.executable, "-m", "bev_ddp.cli", "bench", suite, *args], s.step_timeout_s)
    from bev_ddp.bench import run_suite

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run_suite(suite, args)
    return code, buffer.getvalue()[-3000:]


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
                            "cuda_runtime": torch.version.cuda, "cpu_count": os.cpu_count(),
                            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}")
    return info


# -- the steps --------------------------------------------------------------------------------------
def _config_modalities(path: str) -> list[str]:
    """``model.modalities`` of a config, following ``_base_`` (plain YAML: works before omegaconf is found)."""
    import yaml

    file = ROOT / path if not Path(path).is_absolute() else Path(path)
    data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    modalities = (data.get("model") or {}).get("modalities")
    if modalities is None and data.get("_base_"):
        return _config_modalities(str(file.parent / data["_base_"]))
    return list(modalities or [])


def step_environment(s: Settings) -> StepResult:
    missing = []
    lidar = "lidar" in _config_modalities(s.config)
    # the library's entry points of the later steps: a ModuleNotFoundError names the missing package
    for name in NEEDED_MODULES + (("spconv",) if lidar else ()) + LIBRARY_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing.append(exc.name or name)
        except Exception as exc:  # a broken binary wheel
            missing.append(f"{name} ({type(exc).__name__}: {exc})")
    missing = list(dict.fromkeys(missing))
    if s.device.type == "cuda" and not torch.cuda.is_available():
        return StepResult("environment", "failed", 0.0, "no CUDA device visible to torch")
    status = "failed" if missing else "ok"
    return StepResult("environment", status, 0.0, "missing: " + ", ".join(missing) if missing else "all imports found",
                      {"missing": missing})


def step_build(s: Settings) -> StepResult:
    if not s.build:
        return StepResult("build", "skipped", 0.0, "--no-build (CPU runs use the installed extension)")
    env = _python_env()
    env.setdefault("CUDA_HOME", "/usr/local/cuda")
    env.setdefault("MAX_JOBS", str(max(1, min(16, os.cpu_count() or 1))))
    if s.device.type != "cuda":
        env["BEV_DDP_CPU_ONLY"] = "1"
    code, out = _run([sys.executable, "setup.py", "build_ext", "--inplace"], s.step_timeout_s, env)
    if code != 0:
        return StepResult("build", "failed", 0.0, f"setup.py build_ext exited {code}: {_tail(out)}")
    probe = f"import bev_ddp.ops as o; import json; print(json.dumps(o.backend('{s.device.type}')))"
    code, out = _run([sys.executable, "-c", probe], 120)
    backends = json.loads(out.strip().splitlines()[-1]) if code == 0 else {}
    want = f"{s.device.type}-kernel"
    ok = code == 0 and all(v == want for v in backends.values())
    return StepResult("build", "ok" if ok else "failed", 0.0, f"backends {backends}" if ok else _tail(out),
                      {"backends": backends})


def step_cuda_tests(s: Settings) -> StepResult:
    argv = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/ops", "tests/nn"]
    code, out = _run(argv, s.step_timeout_s)
    summary = _tail(out, 1)
    if s.device.type != "cuda":  # on the CPU every CUDA test must skip cleanly
        ok = code == 0 and " skipped" in summary and " failed" not in summary
        return StepResult("cuda-tests", "ok" if ok else "failed", 0.0, f"(no GPU) {summary}")
    ok = code == 0 and " skipped" not in summary and " passed" in summary
    return StepResult("cuda-tests", "ok" if ok else "failed", 0.0, summary if ok else _tail(out, 15))


def step_bench_ops(s: Settings) -> StepResult:
    out_json = s.out_dir / "bench_ops.json"
    args = ["--out", str(out_json)]
    args += ["--scale", "0.02", "--repeats", "1", "--no-cuda"] if s.tiny else ["--repeats", "5"]
    code, out = _bench(s, "ops", args)
    if code != 0 or not out_json.exists():
        return StepResult("bench-ops", "failed", 0.0, f"exit {code}: {_tail(out)}")
    result = _read_json(out_json)
    rows = [c for c in result.get("comparisons", []) if c.get("device") == s.device.type]
    if not rows:
        return StepResult("bench-ops", "failed", 0.0, f"no {s.device.type} comparison in {out_json.name}")
    return StepResult("bench-ops", "ok", 0.0, f"{len(rows)} {s.device.type} comparisons", {"result": result})


def _bench_model(s: Settings, amp: bool) -> StepResult:
    name = f"bench-model-{'amp' if amp else 'fp32'}"
    out_json = s.out_dir / f"bench_model_{'amp' if amp else 'fp32'}.json"
    args = ["--config", s.config, "--device", str(s.device), "--out", str(out_json)]
    args += ["--steps", "1,2", "--points", "2000", "--repeats", "1"] if s.tiny else ["--steps", "1,3,5", "--repeats", "3"]
    if amp:
        args.append("--amp")
    code, out = _bench(s, "model", args)
    if code != 0 or not out_json.exists():
        return StepResult(name, "failed", 0.0, f"exit {code}: {_tail(out)}")
    result = _read_json(out_json)
    return StepResult(name, "ok", 0.0, f"{len(result['variants'])} variants", {"result": result})


def step_bench_compile(s: Settings) -> StepResult:
    """``bev-ddp bench deploy``: eager vs ``torch.compile`` of the whole model at 1 and 2 DDP steps."""
    out_json = s.out_dir / "bench_compile.json"
    args = ["--config", s.config, "--device", str(s.device), "--runtimes", "eager,compile", "--steps", "1,2",
            "--out", str(out_json)]
    args += ["--points", "2000", "--repeats", "1", "--compile-backend", "aot_eager"] if s.tiny else ["--repeats", "3"]
    code, out = _bench(s, "deploy", args)
    if code != 0 or not out_json.exists():
        return StepResult("bench-compile", "failed", 0.0, f"exit {code}: {_tail(out)}")
    result = _read_json(out_json)
    return StepResult("bench-compile", "ok", 0.0, f"{len(result['rows'])} rows", {"result": result})


def step_bench_model_fp32(s: Settings) -> StepResult:
    return _bench_model(s, amp=False)


def step_bench_model_amp(s: Settings) -> StepResult:
    return _bench_model(s, amp=True)


def step_sampling_no_sync(s: Settings) -> StepResult:
    """DDP sampling at the BEV decoder's size (tiny: 16x16) with every host read-back forbidden."""
    from bev_ddp.bench.host_sync import forbid_host_sync
    from bev_ddp.diffusion.encoding import ClassEmbeddingEncoder
    from bev_ddp.diffusion.value_checks import value_checks
    from bev_ddp.nn import DDPHead, MapDecoder

    size, dims, depth = (16, 32, 2) if s.tiny else (200, 256, 5)
    torch.manual_seed(0)
    decoder = MapDecoder(cond_channels=dims, map_channels=dims, out_channels=6, embed_dims=dims, depth=depth,
                         num_heads=8, num_points=4, ffn_dims=4 * dims)
    encoder = ClassEmbeddingEncoder(num_classes=6, dims=dims, scale=0.01, multi_label=True)
    head = DDPHead(decoder=decoder, label_encoder=encoder, objective=lambda logits, target: logits.mean()).eval()
    head.to(s.device)
    cond = torch.randn(1, dims, size, size, device=s.device)

    def predict() -> dict:  # noise drawn on the device itself: no host-to-device copy either
        return head.predict_many(cond, steps=[1, 3, 5], generator=torch.Generator(s.device).manual_seed(0))

    warm = predict()  # first launches, allocator growth (outside the guard)
    with value_checks(False), forbid_host_sync(cuda=s.device.type == "cuda"):
        guarded = predict()
    same = all(torch.equal(guarded[n].logits, warm[n].logits) for n in (1, 3, 5))
    if not same:
        return StepResult("sampling-no-sync", "failed", 0.0, "guarded run differs from the unguarded one")
    return StepResult("sampling-no-sync", "ok", 0.0, f"predict_many(steps=[1, 3, 5]) at {size}x{size}, {depth} layers")


def step_amp_training(s: Settings) -> StepResult:
    """A few autocast iterations on one synthetic batch; the objective is fixed (same t, noise and
    drop-path draws every iteration) so a falling loss means the optimiser works under AMP."""
    from bev_ddp.bench.model import amp_dtype, synthetic_batch
    from bev_ddp.bev.build import build_bev_model
    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.config import load_config
    from bev_ddp.engine.data import move_to_device

    iters = 2 if s.tiny else 8
    cfg = load_config(s.config, [], schema=BEVConfig)
    cfg.model.head.type = "ddp"
    torch.manual_seed(0)
    model = build_bev_model(cfg).to(s.device).train()
    extent = float(max(abs(v) for v in cfg.model.lidar.point_cloud_range[:2]))
    batch = move_to_device(synthetic_batch(image_size=tuple(cfg.data.image_size), num_cams=6,
                                           num_points=2000 if s.tiny else 250_000, extent=extent, seed=0), s.device)
    grid = [round((b[1] - b[0]) / b[2]) for b in (cfg.data.xbound, cfg.data.ybound)]
    gen = torch.Generator().manual_seed(1)
    targets = (torch.rand(1, len(cfg.data.classes), *grid, generator=gen) < 0.3).float().to(s.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    cuda = s.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    losses = []
    for _ in range(iters):
        torch.manual_seed(0)  # same drop-path draws every iteration
        noise_gen = torch.Generator(s.device).manual_seed(0)  # same t and noise every iteration
        with torch.autocast(s.device.type, dtype=amp_dtype(s.device)):
            _, parts = model.head(model.encode(batch), targets, generator=noise_gen)
            loss = sum(parts.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    finite = all(map(lambda v: v == v and abs(v) != float("inf"), losses))
    falls = finite and min(losses[-2:]) < losses[0]
    detail = f"{iters} iterations ({amp_dtype(s.device)}): loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    return StepResult("amp-training", "ok" if falls else "failed", 0.0,
                      detail + ("" if finite else " (non-finite)") + ("" if falls else " (did not fall)"),
                      {"losses": losses})


def _two_process_worker(rank: int, world: int, port: int, backend: str, results: Any) -> None:
    import torch.distributed as dist

    from bev_ddp.comm import shutdown

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    ok = False
    try:
        total = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(total)
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(
            torch.nn.Linear(8, 2).to(device), device_ids=[rank] if device.type == "cuda" else None)
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(rank)).to(device)  # different data per rank
        model(x).square().sum().backward()
        grad = model.module.weight.grad.detach().cpu()
        results.put((rank, total.cpu().tolist(), grad.tolist()))
        del model  # the DDP reducer holds the group: release it before the group goes
        ok = True
    finally:
        shutdown(synchronize=ok)  # barrier first: no rank drops a connection its peer still uses


def step_two_process(s: Settings) -> StepResult:
    import torch.multiprocessing as mp

    if s.device.type == "cuda":
        if torch.cuda.device_count() < 2:
            return StepResult("two-process", "skipped", 0.0, f"{torch.cuda.device_count()} GPU: nccl needs two")
        backend = "nccl"
    else:
        backend = "gloo"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(_two_process_worker, args=(2, port, backend, results), nprocs=2, join=True,
                       start_method="spawn")
    got = sorted(results.get() for _ in range(2))
    sums_ok = all(total == [3.0] * 4 for _, total, _ in got)
    grads_ok = got[0][2] == got[1][2]  # DDP averaged the gradients
    ok = sums_ok and grads_ok
    return StepResult("two-process", "ok" if ok else "failed", 0.0,
                      f"{backend}: all_reduce {'ok' if sums_ok else 'WRONG'}, DDP gradients "
                      f"{'agree' if grads_ok else 'DIFFER'}")


STEPS: tuple[tuple[str, Callable[[Settings], StepResult], tuple[str, ...]], ...] = (
    # (name, function, steps it needs to have passed)
    ("environment", step_environment, ()),
    ("build", step_build, ()),
    ("cuda-tests", step_cuda_tests, ("build",)),
    ("bench-ops", step_bench_ops, ("environment", "build")),
    ("bench-model-fp32", step_bench_model_fp32, ("environment", "build")),
    ("bench-model-amp", step_bench_model_amp, ("environment", "build")),
    ("bench-compile", step_bench_compile, ("environment", "build")),
    ("sampling-no-sync", step_sampling_no_sync, ("build",)),
    ("amp-training", step_amp_training, ("environment", "build")),
    ("two-process", step_two_process, ()),
)


def run_checks(s: Settings, only: set[str] | None = None) -> list[StepResult]:
    """Run the steps in order; a step whose prerequisite failed fails too (naming it), never skips."""
    results: dict[str, StepResult] = {}
    for name, fn, needs in STEPS:
        if only is not None and name not in only:
            continue
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        broken = [n for n in needs if n in results and results[n].status == "failed"]
        if broken:
            result = StepResult(name, "failed", 0.0, f"not run: {', '.join(broken)} failed")
        else:
            try:
                result = fn(s)
            except Exception as exc:  # one broken step must not hide the others
                result = StepResult(name, "failed", 0.0, f"{type(exc).__name__}: {exc}\n{_tail(traceback.format_exc())}")
        result.seconds = round(time.perf_counter() - start, 2)
        result.cpu_s = round(_cpu_seconds() - cpu_start, 2)
        results[name] = result
        print(f"[gpu-check] {name:18s} {result.status:7s} {result.seconds:7.1f} s ({result.cpu_s:.1f} s CPU)  {result.detail.splitlines()[0] if result.detail else ''}",
              flush=True)
    return list(results.values())


# -- report -----------------------------------------------------------------------------------------
def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def _ops_lines(result: dict[str, Any], device: str) -> list[str]:
    lines = ["| op | device | kernel s | ref s | speed-up | kernel MiB | ref MiB |", "|---|---|---|---|---|---|---|"]
    for c in result.get("comparisons", []):
        if c.get("device") != device:
            continue
        lines.append(f"| {c.get('op')} | {c.get('device')} | {c.get('kernel_s', float('nan')):.5f} | "
                     f"{c.get('reference_s', float('nan')):.5f} | {c.get('speedup', float('nan')):.2f}x | "
                     f"{_mib(c.get('kernel_peak_bytes'))} | {_mib(c.get('reference_peak_bytes'))} |")
    b = result.get("cuda_bandwidth" if device == "cuda" else "bandwidth")
    if b:
        lines += ["", f"bev_pool forward ({device}) touches {b['bytes'] / 2**20:.0f} MiB in {b['kernel_s']:.5f} s = "
                      f"{b['bytes'] / b['kernel_s'] / 1e9:.1f} GB/s; a copy of the same bytes: {b['copy_s']:.5f} s -> "
                      f"{100 * b['fraction_of_copy']:.0f} % of copy bandwidth"]
    return lines


def _model_lines(fp32: dict[str, Any] | None, amp: dict[str, Any] | None) -> list[str]:
    lines = ["| variant | fp32 total s | fp32 / baseline | fp32 peak MiB | AMP total s | AMP / baseline | AMP peak MiB | AMP speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    amp_by_name = {v["name"]: v for v in (amp or {}).get("variants", [])}
    for v in (fp32 or {}).get("variants", []):
        a = amp_by_name.get(v["name"], {})
        speedup = v["total_s"] / a["total_s"] if a.get("total_s") else float("nan")
        lines.append(f"| {v['name']} | {v['total_s']:.4f} | {v['total_ratio']:.2f}x | {v['peak_mib']} | "
                     f"{a.get('total_s', float('nan')):.4f} | {a.get('total_ratio', float('nan')):.2f}x | "
                     f"{a.get('peak_mib')} | {speedup:.2f}x |")
    return lines


def markdown_summary(report: dict[str, Any]) -> str:
    steps = {r["name"]: r for r in report["steps"]}
    lines = [f"# gpu-check: {'PASSED' if report['ok'] else 'FAILED'}", "",
             f"`{report['command']}` on {report['machine'].get('gpu', 'CPU')} "
             f"({json.dumps(report['machine'])})", "",
             "| step | status | wall s | CPU s | detail |", "|---|---|---|---|---|"]
    for r in report["steps"]:
        detail = (r["detail"].splitlines() or [""])[0].replace("|", "/")
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']} | {r['cpu_s']} | {detail} |")
    ops = steps.get("bench-ops", {}).get("data", {}).get("result")
    if ops:
        lines += ["", "## bench ops (kernel vs reference, one run)", "", *_ops_lines(ops, report["device"])]
    fp32 = steps.get("bench-model-fp32", {}).get("data", {}).get("result")
    amp = steps.get("bench-model-amp", {}).get("data", {}).get("result")
    if fp32:
        lines += ["", f"## bench model ({fp32['config']}, ratios to the baseline head within each run)", "",
                  *_model_lines(fp32, amp)]
    compiled = steps.get("bench-compile", {}).get("data", {}).get("result")
    if compiled:
        from bev_ddp.bench.deploy import DeployBenchResult, LatencyRow, markdown_table

        table = markdown_table(DeployBenchResult(**{**compiled, "rows": [LatencyRow(**r) for r in compiled["rows"]]}))
        lines += ["", f"## eager vs torch.compile ({compiled['config']}, one run)", "", table]
    losses = steps.get("amp-training", {}).get("data", {}).get("losses")
    if losses:
        lines += ["", "## AMP training losses", "", ", ".join(f"{v:.4f}" for v in losses)]
    return "\n".join(lines) + "\n"


def default_out_dir() -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    return ROOT / "work_dirs" / "gpu_check" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="toy sizes and the tiny synthetic config (CI on the CPU)")
    parser.add_argument("--config", default=None, help=f"BEV config (default {FULL_CONFIG}; --tiny: {TINY_CONFIG})")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default $OUT, else work_dirs/gpu_check/TIME)")
    parser.add_argument("--no-build", dest="build", action="store_false", default=None,
                        help="use the installed extensions (default on the CPU)")
    parser.add_argument("--only", default=None, help="comma-separated step names to run (default all)")
    parser.add_argument("--step-timeout", type=int, default=300, help="seconds per subprocess step (default 300)")


def run(args: argparse.Namespace) -> int:
    from bev_ddp.errors import InputError
    from bev_ddp.output_files import write_text_atomic

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device here (use --device cpu --tiny on a CPU machine)")
    only = set(args.only.split(",")) if args.only else None
    if only is not None and not only <= {name for name, _, _ in STEPS}:
        raise InputError(f"--only: unknown step(s) {sorted(only - {n for n, _, _ in STEPS})}")
    settings = Settings(device=device, tiny=bool(args.tiny), config=args.config or (TINY_CONFIG if args.tiny else FULL_CONFIG),
                        out_dir=(args.out or default_out_dir()).resolve(),
                        build=device.type == "cuda" if args.build is None else args.build,
                        step_timeout_s=args.step_timeout)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = run_checks(settings, only)
    report = {
        "command": "bev-ddp bench gpu-check " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "gpu-check"] else sys.argv[1:]),
        "device": device.type, "tiny": settings.tiny, "config": settings.config,
        "machine": machine_info(device), "seconds": round(time.perf_counter() - started, 1),
        "ok": all(r.status != "failed" for r in results), "steps": [asdict(r) for r in results],
    }
    write_text_atomic(settings.out_dir / "gpu_check.json", json.dumps(report, indent=2))
    write_text_atomic(settings.out_dir / "gpu_check.md", markdown_summary(report))
    print(f"[gpu-check] {'PASSED' if report['ok'] else 'FAILED'} in {report['seconds']} s; "
          f"summary in {settings.out_dir / 'gpu_check.md'}")
    return 0 if report["ok"] else 1
