"""``bev-ddp bench model``: latency and peak memory of the BEV model, DDP steps vs baseline head.

One process, one input (a synthetic batch of 6 images at the config's image size and a LiDAR
cloud of ``--points`` points), random weights.  Both heads are built from the config's
``model.head`` section (its ``type`` is ignored: both are always measured).  The encoders (camera, LiDAR, fuser, SECOND +
SECONDFPN) run once per repeat and are timed stage by stage with forward hooks; each head variant
(BEVFusion's conv head, DDP with 1, 3, 5 sampling steps) then runs on the same features.

* latency of a variant = encoder time + head time (median over repeats), in seconds;
* ratios are against the baseline head, measured in the same run (absolute times depend on the
  machine and its load; ratios much less so);
* peak memory = the highest resident-set growth above the level before the part started
  (sampled every 2 ms from ``/proc/self/statm`` after returning freed heap to the OS); a
  variant's peak is the larger of the encoder's and its head's.  On CUDA (``--device cuda``):
  the growth of ``torch.cuda.max_memory_allocated``, and every timer waits for the device;
* ``--amp`` runs encoders and heads under autocast: float16 on CUDA, as training does;
  bfloat16 on the CPU (the LiDAR branch runs outside CPU autocast, see ``BEVFusionModel``).  The DDP variants share one first decoder call only within a ``predict`` call, and
  each variant here is its own call, so each pays for its own.

Results go to the console and, with ``--out``, to a JSON file.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_CONFIG = "configs/bev/nuscenes_fusion_ddp.yaml"

# (label, dotted module path) of the stages timed with hooks, in pipeline order
STAGES = (
    ("camera backbone", "camera.backbone"),
    ("camera neck (LSS-FPN)", "camera.neck"),
    ("view transform (LSS + bev_pool + downsample)", "camera.view_transform"),
    ("voxelize", "lidar.voxelizer"),
    ("sparse encoder", "lidar.sparse_encoder"),
    ("fuser", "fuser"),
    ("SECOND", "decoder_backbone"),
    ("SECONDFPN", "decoder_neck"),
)


# -- memory -------------------------------------------------------------------------------------
def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _page_size()
    except OSError:
        return None


def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Give freed heap back to the OS (glibc), so RSS growth measures the next part only."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Context manager: ``.peak`` = highest RSS growth (bytes) inside the block, None if unmeasurable."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self.peak: int | None = None

    def __enter__(self) -> "PeakRSS":
        _trim_heap()
        self._start = _rss_bytes()
        self._max = self._start
        self._stop = threading.Event()
        if self._start is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            value = _rss_bytes()
            if value is not None and value > (self._max or 0):
                self._max = value
            time.sleep(self.interval_s)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._start is not None:
            self._thread.join()
            end = _rss_bytes() or 0
            self.peak = max(self._max or 0, end) - self._start


class PeakCUDA:
    """Context manager: ``.peak`` = growth (bytes) of ``torch.cuda.max_memory_allocated`` inside the block."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak: int | None = None

    def __enter__(self) -> "PeakCUDA":
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device) - self._start


def peak_meter(device: torch.device) -> "PeakRSS | PeakCUDA":
    return PeakCUDA(device) if device.type == "cuda" else PeakRSS()


# -- timing ---------------------------------------------------------------------------------------
def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Forward hooks that add up the wall time spent in named sub-modules."""

    def __init__(self, model: nn.Module, stages: tuple[tuple[str, str], ...], device: torch.device | None = None):
        self.seconds: dict[str, float] = {}
        self.device = device
        self._handles = []
        modules = dict(model.named_modules())
        for label, path in stages:
            module = modules.get(path)
            if module is None:
                continue
            self.seconds[label] = 0.0
            self._handles.append(module.register_forward_pre_hook(self._start_hook(label)))
            self._handles.append(module.register_forward_hook(self._stop_hook(label)))
        self._started: dict[str, float] = {}

    def _start_hook(self, label: str):
        def hook(module: nn.Module, inputs: Any) -> None:
            _sync(self.device)
            self._started[label] = time.perf_counter()

        return hook

    def _stop_hook(self, label: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            _sync(self.device)
            self.seconds[label] += time.perf_counter() - self._started.pop(label)

        return hook

    def reset(self) -> None:
        self.seconds = {k: 0.0 for k in self.seconds}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class VariantResult:
    """Latency (s) and peak memory (MiB) of one head variant, with ratios to the baseline head."""

    name: str
    head_s: float
    total_s: float
    peak_mib: float | None
    head_peak_mib: float | None
    total_ratio: float = math.nan
    head_ratio: float = math.nan
    peak_ratio: float | None = None


@dataclass
class ModelBenchResult:
    config: str
    device: str
    amp: bool
    threads: int
    repeats: int
    points: int
    image_size: list[int]
    encoder_s: float
    encoder_peak_mib: float | None
    stages_s: dict[str, float]
    variants: list[VariantResult] = field(default_factory=list)


# -- inputs ---------------------------------------------------------------------------------------
def synthetic_batch(*, image_size: tuple[int, int], num_cams: int, num_points: int, extent: float, seed: int) -> dict:
    """A batch of one sample: random images, a ring of outward cameras, a random cloud (lidar frame)."""
    from bev_ddp.data.structures import CameraGeometry, collate_samples

    gen = torch.Generator().manual_seed(seed)
    h, w = image_size
    intrinsics = torch.eye(4).repeat(num_cams, 1, 1)
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = 0.5 * w
    intrinsics[:, 0, 2], intrinsics[:, 1, 2] = w / 2, h / 2
    camera2lidar = torch.eye(4).repeat(num_cams, 1, 1)
    for i in range(num_cams):
        yaw = 2 * math.pi * i / num_cams
        c, s = math.cos(yaw), math.sin(yaw)
        camera2lidar[i, :3, :3] = torch.tensor([[s, 0.0, c], [-c, 0.0, s], [0.0, -1.0, 0.0]])  # columns: right, down, forward
        camera2lidar[i, 2, 3] = 1.5
    eye = torch.eye(4)
    points = spinning_lidar_cloud(num_points, extent=extent, gen=gen)
    sample = {
        "img": torch.randn(num_cams, 3, h, w, generator=gen),
        "geometry": CameraGeometry(intrinsics=intrinsics, camera2lidar=camera2lidar, img_aug=eye.repeat(num_cams, 1, 1),
                                   lidar_aug=eye.clone(), camera2ego=camera2lidar.clone(), lidar2ego=eye.clone()),
        "points": points,
        "camera_valid": torch.ones(num_cams, dtype=torch.bool),
        "meta": {"token": "bench"},
    }
    return collate_samples([sample])


def spinning_lidar_cloud(num_points: int, *, extent: float, gen: torch.Generator, height: float = 1.8) -> torch.Tensor:
    """[N, 5] points shaped like a spinning LiDAR's (surfaces, not a filled volume), lidar frame.

    Azimuth uniform, range density ∝ 1/r between 1 m and ``extent`` (denser near the sensor);
    70 % on the ground (z = -height ± 5 cm), 30 % on obstacles (z uniform up to 3 m above ground).
    The sparse encoder's cost depends on how many voxels are occupied, which this layout keeps
    close to a real sweep's.
    """
    azimuth = torch.rand(num_points, generator=gen) * 2 * math.pi
    radius = torch.exp(torch.rand(num_points, generator=gen) * math.log(extent))  # log-uniform in [1, extent)
    on_ground = torch.rand(num_points, generator=gen) < 0.7
    z = torch.where(on_ground, -height + 0.05 * torch.randn(num_points, generator=gen),
                    -height + 3.0 * torch.rand(num_points, generator=gen))
    intensity = torch.rand(num_points, generator=gen)
    time_lag = torch.randint(0, 10, (num_points,), generator=gen).float() * 0.05  # 10 sweeps, 50 ms apart
    return torch.stack([radius * torch.cos(azimuth), radius * torch.sin(azimuth), z, intensity, time_lag], dim=1)


# -- the benchmark ------------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _mib(value: int | None) -> float | None:
    return None if value is None else value / 2**20


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of ``--amp``: float16 on CUDA (as the trainer), bfloat16 on the CPU (CPU
    float16 matmuls are emulated and many times slower)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def bench_model(
    *, config: str, overrides: list[str], steps: list[int], repeats: int, points: int, threads: int, seed: int = 0,
    device: str = "cpu", amp: bool = False, warmup: int = 0,
) -> ModelBenchResult:
    """Build the config's model (DDP head) and a baseline head, then time both on one batch."""
    from bev_ddp.bev.build import build_bev_model, build_head
    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.config import load_config
    from bev_ddp.engine.data import move_to_device

    dev = torch.device(device)

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = load_config(config, overrides, schema=BEVConfig)
    cfg.model.head.type = "ddp"
    model = build_bev_model(cfg).eval().to(dev)
    head_cfg = cfg.model.head.copy()
    head_cfg.type = "baseline"
    baseline_head = build_head(head_cfg, in_channels=model.decoder_neck.out_channels, classes=list(cfg.data.classes),
                               xbound=cfg.data.xbound, ybound=cfg.data.ybound).eval().to(dev)
    extent = float(max(abs(v) for v in cfg.model.lidar.point_cloud_range[:2]))
    batch = synthetic_batch(image_size=tuple(cfg.data.image_size), num_cams=6, num_points=points, extent=extent, seed=seed)
    batch = move_to_device(batch, dev)
    autocast = torch.autocast(dev.type, dtype=amp_dtype(dev), enabled=amp)
    with torch.no_grad(), autocast:  # untimed warm-up: CUDA context, kernels' first launch, allocator
        for _ in range(warmup):
            feats = model.encode(batch)
            model.head.predict(feats, steps=[max(steps)], seed=seed)
            baseline_head.predict(feats, steps=[1], seed=seed)
            del feats

    timer = StageTimer(model, STAGES, dev)
    encoder_times: list[float] = []
    stage_times: dict[str, list[float]] = {label: [] for label in timer.seconds}
    head_times: dict[str, list[float]] = {}
    head_peaks: dict[str, int | None] = {}
    encoder_peak: int | None = None
    variants = [("baseline head", baseline_head, 1)] + [(f"DDP {s} step{'s' if s > 1 else ''}", model.head, s) for s in steps]
    with torch.no_grad(), autocast:
        for _ in range(repeats):
            timer.reset()
            with peak_meter(dev) as mem:
                _sync(dev)
                start = time.perf_counter()
                feats = model.encode(batch)
                _sync(dev)
                encoder_times.append(time.perf_counter() - start)
            encoder_peak = max(encoder_peak or 0, mem.peak) if mem.peak is not None else encoder_peak
            for label, seconds in timer.seconds.items():
                stage_times[label].append(seconds)
            for name, head, num_steps in variants:
                with peak_meter(dev) as mem:
                    _sync(dev)
                    start = time.perf_counter()
                    head.predict(feats, steps=[num_steps], seed=seed)
                    _sync(dev)
                    head_times.setdefault(name, []).append(time.perf_counter() - start)
                if mem.peak is not None:
                    head_peaks[name] = max(head_peaks.get(name) or 0, mem.peak)
                else:
                    head_peaks.setdefault(name, None)
            del feats
    timer.remove()

    encoder_s = _median(encoder_times)
    result = ModelBenchResult(
        config=config, device=str(dev), amp=bool(amp), threads=threads, repeats=repeats, points=points, image_size=list(cfg.data.image_size),
        encoder_s=encoder_s, encoder_peak_mib=_mib(encoder_peak),
        stages_s={label: _median(values) for label, values in stage_times.items()},
    )
    for name, _, _ in variants:
        head_s = _median(head_times[name])
        peak = None if encoder_peak is None or head_peaks[name] is None else max(encoder_peak, head_peaks[name])
        result.variants.append(VariantResult(name=name, head_s=head_s, total_s=encoder_s + head_s, peak_mib=_mib(peak),
                                             head_peak_mib=_mib(head_peaks[name])))
    base = result.variants[0]
    for v in result.variants:
        v.total_ratio = v.total_s / base.total_s
        v.head_ratio = v.head_s / base.head_s
        v.peak_ratio = None if v.peak_mib is None or not base.peak_mib else v.peak_mib / base.peak_mib
    return result


def print_result(result: ModelBenchResult) -> None:
    from rich.table import Table

    from bev_ddp.report.console import Console

    console = Console(width=140)
    where = result.device + (" AMP" if result.amp else " fp32")
    title = (f"BEV model on {where} ({result.threads} threads, {result.repeats} repeat(s), "
             f"{result.image_size[0]}x{result.image_size[1]} x 6 images, {result.points} points) - {result.config}")
    table = Table(title=title)
    for col in ("variant", "head s", "total s", "total / baseline", "head / baseline", "head peak MiB", "peak MiB",
                "peak / baseline"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in result.variants:
        table.add_row(v.name, f"{v.head_s:.3f}", f"{v.total_s:.3f}", f"{v.total_ratio:.2f}x", f"{v.head_ratio:.2f}x",
                      "n/a" if v.head_peak_mib is None else f"{v.head_peak_mib:.0f}",
                      "n/a" if v.peak_mib is None else f"{v.peak_mib:.0f}",
                      "n/a" if v.peak_ratio is None else f"{v.peak_ratio:.2f}x")
    console.print(table)
    stages = Table(title=f"encoder stages (total {result.encoder_s:.3f} s)")
    stages.add_column("stage")
    stages.add_column("s", justify="right")
    stages.add_column("share", justify="right")
    for label, seconds in result.stages_s.items():
        stages.add_row(label, f"{seconds:.3f}", f"{100 * seconds / result.encoder_s:.1f}%")
    console.print(stages)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"BEV config (default {DEFAULT_CONFIG})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.add_argument("--steps", default="1,3,5", help="DDP sampling step counts (default 1,3,5)")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats; medians are reported (default 1)")
    parser.add_argument("--points", type=int, default=250_000, help="LiDAR points in the cloud (10 nuScenes sweeps ~ 250k)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    parser.add_argument("--amp", action="store_true", help="autocast: float16 on CUDA (as training), bfloat16 on the CPU")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs (default 1 on CUDA, 0 on CPU)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from bev_ddp.errors import InputError
    from bev_ddp.output_files import write_text_atomic

    try:
        steps = [int(s) for s in str(args.steps).split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--steps must be comma-separated integers, got {args.steps!r}") from None
    if not steps or min(steps) < 1:
        raise InputError(f"--steps must be positive integers, got {args.steps!r}")
    if args.repeats < 1 or args.points < 0 or args.threads < 1:
        raise InputError("--repeats and --threads must be >= 1 and --points >= 0")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise InputError(f"--device must be cpu or cuda[:i], got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA device is available")
    warmup = args.warmup if args.warmup is not None else int(device.type == "cuda")
    result = bench_model(config=args.config, overrides=list(args.overrides), steps=steps, repeats=args.repeats,
                         points=args.points, threads=args.threads, device=str(device), amp=args.amp, warmup=warmup)
    print_result(result)
    if args.out:
        write_text_atomic(args.out, json.dumps(asdict(result), indent=2))
        print(f"wrote {args.out}")
    return 0
