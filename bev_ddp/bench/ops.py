"""``bev-ddp bench ops``: compiled kernels against their pure-PyTorch references, one process.

Sizes default to BEVFusion's real ones:

* ``bev_pool``: 6 cameras x 118 depth bins x 32 x 88 feature pixels (1,993,728 frustum points),
  80 channels, pooled into a 1 x 256 x 256 grid (0.4 m cells); coordinates come from a
  surround-view frustum geometry (:func:`frustum_coords`), in frustum order;
* ``ms_deform_attn``: the BEV decoder's layer, 200 x 200 queries over one 200 x 200 level,
  256 dims = 8 heads x 32, 4 points sampled around each query's own cell.

Reported, all measured in the same run (absolute times depend on the machine's load, ratios
much less so):

* time = median over ``--repeats`` after one warm-up, in seconds; speed-up = reference / kernel;
* peak memory = growth of the process's peak resident set (``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``) over the resident set before the call, freed heap first returned to
  the OS; on CUDA ``torch.cuda.max_memory_allocated`` growth;
* bev_pool bandwidth: the bytes the op must touch (features and coordinates read, output
  written) divided by its time, as a fraction of ``dst.copy_(src)`` of a buffer of the same
  bytes (the machine's practical limit for streaming those bytes); the same for the backward
  kernel alone (cell gradients and coordinates read, point gradients written);
* whether CPU tensors sit on transparent huge pages: torch does that for allocations of 2 MiB and
  more when ``THP_MEM_ALLOC_ENABLE=1`` is set before its first allocation.  With 4 KiB pages a
  streaming read of the bev_pool features is limited by TLB misses, so the setting moves both
  the kernel and the reference (see ops/README.md; recorded figures in benchmarks/).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bev_ddp.errors import InputError
from bev_ddp.ops import _extension, bev_pool_reference, ms_deform_attn_reference
from bev_ddp.ops._library import bev_pool_backward_op, bev_pool_op, flat_levels, ms_deform_attn_op
from bev_ddp.output_files import write_text_atomic


@dataclass
class OpsBenchSizes:
    """Problem sizes; defaults are BEVFusion's (see module docstring)."""

    cameras: int = 6
    depth_bins: int = 118
    feat_h: int = 32
    feat_w: int = 88
    pool_channels: int = 80
    grid: tuple[int, int, int] = (1, 256, 256)  # (Z, X, Y) cells
    bev_h: int = 200  # deformable attention: queries = one level = bev_h x bev_w
    bev_w: int = 200
    embed_dims: int = 256
    heads: int = 8
    points: int = 4

    @property
    def frustum_points(self) -> int:
        return self.cameras * self.depth_bins * self.feat_h * self.feat_w


@dataclass
class Comparison:
    """One op on one device: kernel vs reference time (s) and peak memory growth (bytes)."""

    op: str
    device: str
    kernel_s: float
    reference_s: float
    kernel_peak_bytes: int | None = None
    reference_peak_bytes: int | None = None

    @property
    def speedup(self) -> float:
        return self.reference_s / self.kernel_s

    @property
    def memory_ratio(self) -> float | None:
        if not self.kernel_peak_bytes or not self.reference_peak_bytes:
            return None
        return self.kernel_peak_bytes / self.reference_peak_bytes


@dataclass
class Bandwidth:
    """bev_pool forward bytes touched and time vs a plain copy of the same bytes.

    ``read_s`` is one streaming pass over the features alone (``feats.sum()``): no pooling
    implementation can be faster, so ``reference_s / read_s`` bounds any kernel's speed-up.
    """

    bytes: int
    kernel_s: float
    copy_s: float
    read_s: float
    reference_s: float
    backward_bytes: int | None = None  # backward: grad_out read, coords read, point gradients written
    backward_s: float | None = None  # the backward kernel alone (steady state: its buffer reused)
    backward_copy_s: float | None = None  # dst.copy_(src) of backward_bytes

    @property
    def fraction_of_copy(self) -> float:
        return self.copy_s / self.kernel_s

    @property
    def backward_fraction_of_copy(self) -> float | None:
        return None if not self.backward_s else self.backward_copy_s / self.backward_s


@dataclass
class OpsBenchResult:
    sizes: OpsBenchSizes
    threads: int
    backend: dict[str, str]
    comparisons: list[Comparison] = field(default_factory=list)
    bandwidth: Bandwidth | None = None  # CPU
    cuda_bandwidth: Bandwidth | None = None  # the same figure on the GPU
    cuda_device: str | None = None
    cpu_huge_pages: bool | None = None  # None: could not be told (not Linux)

    def to_dict(self) -> dict:
        data = asdict(self)
        for row, comp in zip(data["comparisons"], self.comparisons):
            row["speedup"] = comp.speedup
            row["memory_ratio"] = comp.memory_ratio
        for key in ("bandwidth", "cuda_bandwidth"):
            if getattr(self, key) is not None:
                data[key]["fraction_of_copy"] = getattr(self, key).fraction_of_copy
                data[key]["backward_fraction_of_copy"] = getattr(self, key).backward_fraction_of_copy
        return data


# -- measuring ----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time (s) of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _proc_bytes(path: str, key: str) -> int:
    """A ``key:  N kB`` field of a ``/proc`` file, in bytes."""
    with open(path, encoding="ascii") as f:
        match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"{key} missing from {path}")
    return int(match.group(1)) * 1024


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak memory growth (bytes) while ``fn`` runs; None where it cannot be measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS: growth is the call's own
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset the peak resident set (VmHWM) to the current one
        base = _proc_bytes("/proc/self/status", "VmRSS")
        fn()
        return _proc_bytes("/proc/self/status", "VmHWM") - base
    except (OSError, AttributeError):
        return None


def cpu_tensors_on_huge_pages() -> bool | None:
    """Whether a fresh 8 MiB CPU tensor is backed by transparent huge pages; None off Linux."""
    try:
        before = _proc_bytes("/proc/self/smaps_rollup", "AnonHugePages")
        probe = torch.ones(8 << 20, dtype=torch.uint8)  # written, so its pages exist
        after = _proc_bytes("/proc/self/smaps_rollup", "AnonHugePages")
    except OSError:
        return None
    del probe
    return after > before


# -- inputs -------------------------------------------------------------------------------------
def frustum_coords(sizes: OpsBenchSizes) -> torch.Tensor:
    """[N, 4] int32 (x, y, z, b) cells of BEVFusion's camera frustum points, in frustum order.

    Six cameras around the ego (yaw 0, +-55, +-110, 180 deg, 70 deg horizontal field of view),
    depth bins 1 to 60 m every 0.5 m (BEVFusion's ``dbound``), one z cell for all heights, and a
    grid of ``sizes.grid`` cells over +-51.2 m: near cells collect many points, far rays leave it.
    """
    nz, nx, ny = sizes.grid
    yaws = torch.deg2rad(torch.tensor([0.0, 55.0, -55.0, 110.0, -110.0, 180.0]))[: sizes.cameras]
    depth = 1.0 + 0.5 * torch.arange(sizes.depth_bins, dtype=torch.float64)  # [D] m
    half_fov = torch.deg2rad(torch.tensor(35.0, dtype=torch.float64))
    column = torch.linspace(-1, 1, sizes.feat_w, dtype=torch.float64) * torch.tan(half_fov)  # [W] tan(azimuth)
    forward = torch.stack([yaws.cos(), yaws.sin()], dim=-1).double()  # [N_cam, 2]
    right = torch.stack([yaws.sin(), -yaws.cos()], dim=-1).double()
    # ego-frame xy of every (camera, depth, column): depth along the optical axis
    xy = depth[None, :, None, None] * (forward[:, None, None, :] + column[None, None, :, None] * right[:, None, None, :])
    xy = xy[:, :, None].expand(sizes.cameras, sizes.depth_bins, sizes.feat_h, sizes.feat_w, 2)  # rows share xy
    cell = torch.floor((xy.reshape(-1, 2) + 51.2) / (102.4 / torch.tensor([nx, ny]))).int()  # [N, 2]
    z = torch.zeros(cell.shape[0], 1, dtype=torch.int32)
    return torch.cat([cell, z, z], dim=1)  # (x, y, z=0, b=0)


def bev_pool_inputs(sizes: OpsBenchSizes, device: torch.device, generator: torch.Generator):
    """feats [N, C] float32 (random) and coords [N, 4] int32 from :func:`frustum_coords`."""
    feats = torch.randn(sizes.frustum_points, sizes.pool_channels, generator=generator)
    return feats.to(device), frustum_coords(sizes).to(device)


def ms_deform_attn_inputs(sizes: OpsBenchSizes, device: torch.device, generator: torch.Generator):
    """value [1, S, H, Dh] of one level; every query samples around its own BEV cell.

    Sampling locations = the query's cell centre + Gaussian offsets of 2 cells (as the decoder's
    learned offsets), weights softmaxed over the points.
    """
    h, w, heads, points = sizes.bev_h, sizes.bev_w, sizes.heads, sizes.points
    dims = sizes.embed_dims // heads
    q = s = h * w
    value = torch.randn(1, s, heads, dims, generator=generator)
    shapes = torch.tensor([[h, w]], dtype=torch.int64)
    starts = torch.zeros(1, dtype=torch.int64)
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    centre = torch.stack([xs, ys], dim=-1).reshape(1, q, 1, 1, 1, 2)  # [1, Q, 1, 1, 1, 2] (x, y)
    offsets = 2.0 * torch.randn(1, q, heads, 1, points, 2, generator=generator) / torch.tensor([w, h])
    loc = centre + offsets
    attn = torch.randn(1, q, heads, 1, points, generator=generator).softmax(-1)
    # the level table stays on the host: the kernels take it there (no device copy, no sync)
    return [value.to(device), shapes, starts, loc.to(device), attn.to(device)]


# -- benchmarks ---------------------------------------------------------------------------------
def bench_bev_pool(sizes: OpsBenchSizes, device: torch.device, module, repeats: int, seed: int = 0):
    """Forward comparison, forward+backward comparison and the bandwidth figure on ``device``."""
    feats, coords = bev_pool_inputs(sizes, device, torch.Generator().manual_seed(seed))
    grid = sizes.grid

    def kernel():
        return bev_pool_op(feats, coords, 1, *grid)

    def reference():
        return bev_pool_reference(feats, coords, 1, grid)

    forward = Comparison("bev_pool forward", device.type, time_call(kernel, device, repeats),
                         time_call(reference, device, repeats), peak_memory(kernel, device), peak_memory(reference, device))

    leaf = feats.clone().requires_grad_(True)

    def kernel_fb():
        bev_pool_op(leaf, coords, 1, *grid).sum().backward()
        leaf.grad = None

    def reference_fb():
        bev_pool_reference(leaf, coords, 1, grid).sum().backward()
        leaf.grad = None

    both = Comparison("bev_pool forward+backward", device.type, time_call(kernel_fb, device, repeats),
                      time_call(reference_fb, device, repeats), peak_memory(kernel_fb, device),
                      peak_memory(reference_fb, device))
    del leaf

    # forward: features and coords read, grid written; backward: the same sizes the other way round
    touched = feats.nbytes + coords.nbytes + feats.element_size() * sizes.pool_channels * grid[0] * grid[1] * grid[2]
    src = torch.empty(touched, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_s = time_call(lambda: dst.copy_(src), device, repeats)
    del src, dst
    read_s = time_call(lambda: feats.sum(), device, repeats)
    grad_out = torch.ones(1, sizes.pool_channels, *grid, device=device)
    backward_s = time_call(lambda: bev_pool_backward_op(grad_out, coords), device, repeats)
    bandwidth = Bandwidth(bytes=touched, kernel_s=forward.kernel_s, copy_s=copy_s, read_s=read_s,
                          reference_s=forward.reference_s, backward_bytes=touched, backward_s=backward_s,
                          backward_copy_s=copy_s)
    return [forward, both], bandwidth


def bench_ms_deform_attn(sizes: OpsBenchSizes, device: torch.device, module, repeats: int, seed: int = 0):
    """Forward+backward (gradients of value, locations and weights) on ``device``."""
    value, shapes, starts, loc, attn = ms_deform_attn_inputs(sizes, device, torch.Generator().manual_seed(seed))
    leaves = [t.clone().requires_grad_(True) for t in (value, loc, attn)]

    def run(op):
        def step():
            out = op(leaves[0], shapes, starts, leaves[1], leaves[2])
            out.sum().backward()
            for t in leaves:
                t.grad = None
        return step

    levels = flat_levels(shapes.tolist())
    kernel = run(lambda v, _shapes, _starts, lo, at: ms_deform_attn_op(v, levels, lo, at))
    reference = run(ms_deform_attn_reference)
    forward_kernel = lambda: ms_deform_attn_op(value, levels, loc, attn)  # noqa: E731
    forward_reference = lambda: ms_deform_attn_reference(value, shapes, starts, loc, attn)  # noqa: E731
    return [
        Comparison("ms_deform_attn forward", device.type, time_call(forward_kernel, device, repeats),
                   time_call(forward_reference, device, repeats), peak_memory(forward_kernel, device),
                   peak_memory(forward_reference, device)),
        Comparison("ms_deform_attn forward+backward", device.type, time_call(kernel, device, repeats),
                   time_call(reference, device, repeats), peak_memory(kernel, device), peak_memory(reference, device)),
    ]


def bench_ops(sizes: OpsBenchSizes, *, repeats: int = 3, threads: int | None = None, cuda: bool = True) -> OpsBenchResult:
    """Run every comparison on the CPU (and on CUDA when a GPU and the CUDA extension are present)."""
    if threads is not None:
        torch.set_num_threads(threads)
    result = OpsBenchResult(sizes=sizes, threads=torch.get_num_threads(), backend=_backend_summary(),
                            cpu_huge_pages=cpu_tensors_on_huge_pages())
    cpu = torch.device("cpu")
    module = _extension.load("cpu")
    if module is None:
        raise InputError(f"bev_ddp._ops_cpu is not built ({_extension.load_error('cpu')}); nothing to compare")
    comps, result.bandwidth = bench_bev_pool(sizes, cpu, module, repeats)
    result.comparisons += comps
    result.comparisons += bench_ms_deform_attn(sizes, cpu, module, repeats)
    if cuda and torch.cuda.is_available():
        cuda_module = _extension.load("cuda")
        if cuda_module is not None:
            gpu = torch.device("cuda")
            result.cuda_device = torch.cuda.get_device_name(gpu)
            comps, result.cuda_bandwidth = bench_bev_pool(sizes, gpu, cuda_module, repeats)
            result.comparisons += comps
            result.comparisons += bench_ms_deform_attn(sizes, gpu, cuda_module, repeats)
    return result


def _backend_summary() -> dict[str, str]:
    from bev_ddp.ops import backend

    summary = {f"cpu/{k}": v for k, v in backend("cpu").items()}
    if torch.cuda.is_available():
        summary.update({f"cuda/{k}": v for k, v in backend("cuda").items()})
    return summary


# -- output -------------------------------------------------------------------------------------
def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def format_result(result: OpsBenchResult) -> str:
    s = result.sizes
    pages = {True: "2 MiB (transparent huge pages)", False: "4 KiB (THP_MEM_ALLOC_ENABLE=1 gives 2 MiB)",
             None: "unknown"}[result.cpu_huge_pages]
    lines = [
        f"bench ops: {result.threads} CPU thread(s); backends {result.backend}"
        + (f"; GPU {result.cuda_device}" if result.cuda_device else ""),
        f"  CPU tensor pages: {pages}",
        f"  bev_pool: {s.frustum_points} points ({s.cameras} cams x {s.depth_bins} bins x {s.feat_h}x{s.feat_w}), "
        f"{s.pool_channels} ch -> grid {s.grid}",
        f"  ms_deform_attn: {s.bev_h * s.bev_w} queries, {s.embed_dims} dims = {s.heads} heads x "
        f"{s.embed_dims // s.heads}, {s.points} points, 1 level {s.bev_h}x{s.bev_w}",
        "",
        f"{'op':34s} {'dev':4s} {'kernel s':>9s} {'ref s':>9s} {'speed-up':>8s} {'kern MiB':>9s} {'ref MiB':>9s} {'mem ratio':>9s}",
    ]
    for c in result.comparisons:
        ratio = "n/a" if c.memory_ratio is None else f"{c.memory_ratio:.3f}"
        lines.append(
            f"{c.op:34s} {c.device:4s} {c.kernel_s:9.4f} {c.reference_s:9.4f} {c.speedup:7.2f}x "
            f"{_mib(c.kernel_peak_bytes):>9s} {_mib(c.reference_peak_bytes):>9s} {ratio:>9s}"
        )
    for device, b in (("cpu", result.bandwidth), ("cuda", result.cuda_bandwidth)):
        if b is None:
            continue
        lines += [
            "",
            f"bev_pool forward ({device}) touches {b.bytes / 2**20:.0f} MiB in {b.kernel_s:.4f} s = "
            f"{b.bytes / b.kernel_s / 1e9:.2f} GB/s; copying the same bytes takes {b.copy_s:.4f} s = "
            f"{b.bytes / b.copy_s / 1e9:.2f} GB/s -> {100 * b.fraction_of_copy:.0f} % of copy bandwidth",
            f"one streaming read of the features alone (feats.sum()) takes {b.read_s:.4f} s: the kernel takes "
            f"{b.kernel_s / b.read_s:.2f}x that, and no implementation can beat the reference by more than "
            f"{b.reference_s / b.read_s:.1f}x here",
        ]
        if b.backward_s:
            lines.append(
                f"bev_pool backward ({device}) touches {b.backward_bytes / 2**20:.0f} MiB in {b.backward_s:.4f} s = "
                f"{b.backward_bytes / b.backward_s / 1e9:.2f} GB/s; copying the same bytes takes "
                f"{b.backward_copy_s:.4f} s -> {100 * b.backward_fraction_of_copy:.0f} % of copy bandwidth")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement, median reported (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="shrink the problem: frustum points and BEV queries scaled by this factor (default 1 = real)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA comparisons even when a GPU is present")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")


def sizes_for_scale(scale: float) -> OpsBenchSizes:
    """Real sizes with the point count and the BEV side shrunk by ``scale`` (area) for quick runs."""
    if not 0 < scale <= 1:
        raise InputError(f"--scale must lie in (0, 1], got {scale}")
    sizes = OpsBenchSizes()
    side = max(4, round(sizes.bev_h * scale**0.5))
    sizes.depth_bins = max(1, round(sizes.depth_bins * scale))
    sizes.bev_h = sizes.bev_w = side
    return sizes


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        raise InputError("--repeats and --threads must be >= 1")
    result = bench_ops(sizes_for_scale(args.scale), repeats=args.repeats, threads=args.threads, cuda=not args.no_cuda)
    print(format_result(result))
    if args.out:
        write_text_atomic(args.out, json.dumps(result.to_dict(), indent=2))
        print(f"wrote {args.out}")
    return 0
