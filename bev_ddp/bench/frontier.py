"""``bev-ddp bench frontier``: the quality / cost frontier of DDP dynamic inference.

Every point is (noise grid, sampling steps S, noise draws K).  The K draws run as one batch: the
condition is repeated K times along the batch and draw d of every sample starts from seed
``seed + d``, so draw 0 is the K = 1 prediction: the head's own sampling,
:meth:`bev_ddp.bev.heads.DDPBEVHead.sample`.  The map is the mean over draws of the last step's
sigmoid (its ``mean_draws`` protocol), thresholded at 0.5 for ``mIoU@0.50``.

Two parts, measured in one run:

* **latency** on the latency config (default: the full nuScenes fusion config, random weights, the
  synthetic input of ``bev-ddp bench model``): the encoders run once per repeat; then the baseline
  conv head and, for every point, the DDP head including its uncertainty estimators.  A point's
  latency = encoder + head (median over repeats); the ratio is against encoder + baseline head of
  the same run.  Grid ``label``: the noisy map and the decoder run on the map-label grid (200 x 200
  at the full config); ``encoder``: on the encoder grid (128 x 128), logits resized to the label
  grid (the head is built with ``model.head.ddp.noise_grid`` = ``decoder_grid`` = the grid).
* **quality** of trained checkpoints on their held-out split (``--checkpoint`` DDP,
  ``--baseline-checkpoint`` the conv head, each with the config it was trained with): mIoU (max over
  thresholds), mIoU@0.50 and the AUROC of every uncertainty estimator for wrong pixels (see
  :mod:`bev_ddp.metrics.uncertainty` for the error definitions), for every (S, K).  The quality is
  that of the checkpoint's own noise grid; a row of the other grid shows it only when the quality
  config's encoder and label grids coincide (then the grid changes nothing but latency).

Results go to the console, ``--out`` (JSON) and ``--plot`` (PNG).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from bev_ddp.bev.heads import BEVPrediction
from bev_ddp.diffusion.uncertainty import multilabel_estimators
from bev_ddp.metrics.bev_iou import draw_step_probs
from bev_ddp.output_files import probe_output_dir, write_text_atomic, write_via_tmp

DEFAULT_LATENCY_CONFIG = "configs/bev/nuscenes_fusion_ddp.yaml"
NOISE_GRIDS = ("label", "encoder")
AUROC_DEFINITION = "pixels"  # the frontier's AUROC columns use the any-class pixel error (see metrics.uncertainty)
PER_CLASS_DEFINITION = "class_cells"  # and one column the best estimator under the per-class error


def sample_draws(head: nn.Module, cond: torch.Tensor, *, steps: int, draws: int, seed: int) -> BEVPrediction:
    """One frontier point: the DDP BEV head's own K-draw sampling (:meth:`DDPBEVHead.sample`) with the
    ``mean_draws`` protocol (mean over draws of the last step's sigmoid)."""
    return head.sample(cond, steps=[steps], seed=seed, draws=draws, eval_protocol="mean_draws")[steps]


# -- quality ----------------------------------------------------------------------------------------
@dataclass
class QualityPoint:
    """Held-out quality of one (steps, draws) point; AUROC per estimator (pixel errors)."""

    steps: int
    draws: int
    miou: float
    miou50: float
    auroc: dict[str, float | None]
    ece: float | None
    metrics: dict[str, Any] = field(repr=False)  # the evaluator's full per-step dict
    # AUROC per estimator under the per-(class, cell) error (``class_cells``, the per-class definition)
    auroc_per_class: dict[str, float | None] = field(default_factory=dict)

    def best_per_class(self) -> tuple[str | None, float | None]:
        """(estimator, AUROC) of the estimator that ranks wrong (class, cell) predictions best."""
        scored = {k: v for k, v in self.auroc_per_class.items() if v is not None}
        return max(scored.items(), key=lambda kv: kv[1]) if scored else (None, None)


def _point_from_metrics(steps: int, draws: int, metrics: dict[str, Any]) -> QualityPoint:
    m = metrics["steps"][str(steps)]
    est = m["uncertainty_estimators"]
    auroc = {name: d[AUROC_DEFINITION]["auroc"] for name, d in est["estimators"].items()}
    per_class = {name: d[PER_CLASS_DEFINITION]["auroc"] for name, d in est["estimators"].items()}
    return QualityPoint(steps=steps, draws=draws, miou=m["summary"]["mIoU"], miou50=m["summary"]["mIoU@0.50"],
                        auroc=auroc, ece=est["calibration"]["ece"], metrics=m, auroc_per_class=per_class)


@torch.no_grad()
def measure_quality(model: nn.Module, batches: Iterable[dict[str, Any]], *, classes: Sequence[str],
                    steps: Sequence[int], draws: Sequence[int], seed: int = 0) -> list[QualityPoint]:
    """mIoU / mIoU@0.50 / AUROC per estimator of a DDP BEV model for every (steps, draws).

    The encoders run once per batch; every point samples from the same features.
    """
    from bev_ddp.metrics.bev_iou import BEVIoUEvaluator

    model.eval()
    evaluators = {(s, k): BEVIoUEvaluator(classes=classes, steps=[s]) for s in steps for k in draws}
    for batch in batches:
        cond = model.head.condition(model.encode(batch))
        for (s, k), ev in evaluators.items():
            ev.process(batch, {s: sample_draws(model.head, cond, steps=s, draws=k, seed=seed)})
    return [_point_from_metrics(s, k, ev.evaluate()) for (s, k), ev in evaluators.items()]


@torch.no_grad()
def measure_baseline_quality(model: nn.Module, batches: Iterable[dict[str, Any]], *,
                             classes: Sequence[str]) -> QualityPoint:
    """The conv head's mIoU / mIoU@0.50 / AUROC (entropy of its probability; the other estimators are 0)."""
    from bev_ddp.metrics.bev_iou import BEVIoUEvaluator

    model.eval()
    ev = BEVIoUEvaluator(classes=classes, steps=[1])
    for batch in batches:
        ev.process(batch, model.predict(batch, steps=[1]))
    return _point_from_metrics(1, 1, ev.evaluate())


def _load_trained(config: str | None, checkpoint: str) -> tuple[Any, nn.Module]:
    """A trained BEV model: its checkpoint (or run folder) with the config it carries, or ``config``."""
    from bev_ddp.engine.pretrained import build_pretrained, resolve_model_source
    from bev_ddp.errors import InputError

    source = resolve_model_source(config, checkpoint)
    if source.cfg.task != "bev":
        raise InputError(f"the frontier scores BEV models, {checkpoint} is for task {source.cfg.task!r}")
    return source.cfg, build_pretrained(source)


def _held_out_batches(cfg: Any, max_samples: int | None) -> list[dict[str, Any]]:
    from bev_ddp.bev.task import TASK
    from bev_ddp.engine.data import build_eval_loader

    dataset = TASK.build_dataset(cfg, cfg.eval.split)
    loader = build_eval_loader(dataset, collate=TASK.collate, batch_size=cfg.eval.batch_size, num_workers=0,
                               max_samples=max_samples, num_replicas=1, rank=0)
    return list(loader)


# -- latency ----------------------------------------------------------------------------------------
@dataclass
class LatencyPoint:
    grid: str  # label | encoder
    grid_size: list[int]  # cells of the decoder's map
    steps: int
    draws: int
    head_s: float
    total_s: float
    total_ratio: float = math.nan  # against encoder + baseline head, same run


@dataclass
class LatencyResult:
    config: str
    threads: int
    repeats: int
    points: int
    encoder_s: float
    baseline_head_s: float
    baseline_total_s: float
    variants: list[LatencyPoint] = field(default_factory=list)


def _grid_heads(cfg: Any, in_channels: int, grids: Sequence[str]) -> dict[str, nn.Module]:
    """One DDP head per grid (random weights): ``label`` as configured, ``encoder`` with the noisy map
    and the decoder's layers on the encoder grid (``noise_grid`` = ``decoder_grid`` = encoder)."""
    from bev_ddp.bev.build import build_head

    heads = {}
    for grid in grids:
        head_cfg = cfg.model.head.copy()
        head_cfg.type = "ddp"
        head_cfg.ddp.noise_grid = grid
        head_cfg.ddp.decoder_grid = grid
        heads[grid] = build_head(head_cfg, in_channels=in_channels, classes=list(cfg.data.classes),
                                 xbound=cfg.data.xbound, ybound=cfg.data.ybound).eval()
    return heads


@torch.no_grad()
def measure_latency(*, config: str, overrides: Sequence[str], steps: Sequence[int] | None, draws: Sequence[int],
                    grids: Sequence[str], repeats: int, points: int, threads: int, seed: int = 0) -> LatencyResult:
    """Time the baseline head and every (grid, steps, draws) point on one synthetic batch
    (``steps=None``: the DDP head's own default)."""
    from bev_ddp.bench.model import synthetic_batch
    from bev_ddp.bev.build import build_bev_model
    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.config import load_config

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = load_config(config, list(overrides), schema=BEVConfig)
    cfg.model.head.type = "baseline"
    model = build_bev_model(cfg).eval()  # encoders + the baseline head
    in_channels = model.decoder_neck.out_channels
    heads = _grid_heads(cfg, in_channels, grids)
    steps = list(steps) if steps else [next(iter(heads.values())).steps]
    extent = float(max(abs(v) for v in cfg.model.lidar.point_cloud_range[:2]))
    batch = synthetic_batch(image_size=tuple(cfg.data.image_size), num_cams=6, num_points=points, extent=extent,
                            seed=seed)
    enc_t: list[float] = []
    base_t: list[float] = []
    head_t: dict[tuple[str, int, int], list[float]] = {}
    sizes: dict[str, list[int]] = {}
    for _ in range(repeats):
        start = time.perf_counter()
        feats = model.encode(batch)
        enc_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.head.predict(feats, steps=[1])
        base_t.append(time.perf_counter() - start)
        for grid, head in heads.items():
            for s in steps:
                for k in draws:
                    start = time.perf_counter()
                    cond = head.condition(feats)
                    pred = sample_draws(head, cond, steps=s, draws=k, seed=seed)
                    multilabel_estimators(draw_step_probs(pred))
                    head_t.setdefault((grid, s, k), []).append(time.perf_counter() - start)
                    sizes[grid] = list(cond.shape[-2:])
        del feats
    med = statistics.median
    result = LatencyResult(config=config, threads=threads, repeats=repeats, points=points,
                           encoder_s=med(enc_t), baseline_head_s=med(base_t), baseline_total_s=med(enc_t) + med(base_t))
    for (grid, s, k), values in head_t.items():
        total = result.encoder_s + med(values)
        result.variants.append(LatencyPoint(grid=grid, grid_size=sizes[grid], steps=s, draws=k, head_s=med(values),
                                            total_s=total, total_ratio=total / result.baseline_total_s))
    return result


# -- the frontier -------------------------------------------------------------------------------------
def frontier_rows(latency: LatencyResult | None, quality: list[QualityPoint] | None, baseline: QualityPoint | None,
                  quality_grid: str | None, grids_coincide: bool) -> list[dict[str, Any]]:
    """One row per latency point, joined with the quality of the same (steps, draws) where it applies;
    without latency (``--no-latency``) one row per quality point, latency ``None``."""
    by_point = {(q.steps, q.draws): q for q in quality or []}
    if latency is None:
        return ([{"name": "baseline head", "grid": None, "steps": None, "draws": None, "total_ratio": None,
                  "total_s": None, **_quality_cells(baseline)}] if baseline else []) + [
            {"name": f"DDP {quality_grid} grid, {q.steps} step(s), {q.draws} draw(s)", "grid": quality_grid,
             "steps": q.steps, "draws": q.draws, "total_ratio": None, "total_s": None, **_quality_cells(q)}
            for q in quality or []]
    rows = [{"name": "baseline head", "grid": None, "steps": None, "draws": None, "total_ratio": 1.0,
             "total_s": latency.baseline_total_s,
             **_quality_cells(baseline)}]
    for v in latency.variants:
        q = by_point.get((v.steps, v.draws)) if (grids_coincide or v.grid == quality_grid) else None
        rows.append({"name": f"DDP {v.grid} grid {v.grid_size[0]}x{v.grid_size[1]}, {v.steps} step(s), "
                             f"{v.draws} draw(s)", "grid": v.grid, "steps": v.steps, "draws": v.draws,
                     "total_ratio": v.total_ratio, "total_s": v.total_s, **_quality_cells(q)})
    return rows


def _quality_cells(q: QualityPoint | None) -> dict[str, Any]:
    if q is None:
        return {"miou": None, "miou50": None, "auroc": {}, "ece": None, "best_auroc_per_class": None}
    return {"miou": q.miou, "miou50": q.miou50, "auroc": dict(q.auroc), "ece": q.ece,
            "best_auroc_per_class": q.best_per_class()}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The frontier as a markdown table (IoU in %, AUROC of pixel errors; the last column: the best
    estimator's AUROC of wrong (class, cell) predictions)."""
    names = sorted({n for r in rows for n in r["auroc"]})
    head = ["point", "whole model / baseline", "mIoU", "mIoU@0.50", *[f"AUROC {n}" for n in names], "ECE",
            "best AUROC per class"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for r in rows:
        ratio = "n/a" if r["total_ratio"] is None else f"{r['total_ratio']:.2f}x"
        best = r.get("best_auroc_per_class") or (None, None)
        cells = [r["name"], ratio, pct(r["miou"]), pct(r["miou50"]),
                 *[num(r["auroc"].get(n)) for n in names], num(r["ece"]),
                 "n/a" if best[1] is None else f"{best[1]:.3f} ({best[0]})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_per_class(points: list[QualityPoint], baseline: QualityPoint | None) -> str:
    """Per-class IoU (%) at threshold 0.50 / best threshold, for the baseline and every (steps, draws)."""
    rows = ([("baseline head", baseline)] if baseline else []) + [(f"S={q.steps}, K={q.draws}", q) for q in points]
    if not rows:
        return ""
    classes = list(rows[0][1].metrics["per_class"])
    lines = ["| point | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for name, q in rows:
        table = q.metrics["per_threshold"]
        at50 = table["thresholds"].index(min(table["thresholds"], key=lambda t: abs(t - 0.5)))
        cells = [f"{100 * table['per_class'][c][at50]:.1f} / {100 * q.metrics['per_class'][c]:.1f}" for c in classes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_description(threads: int) -> str:
    """CPU model, logical cores and torch threads of this machine (for the dated result files)."""
    import os
    import platform

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, torch {torch.__version__}, {threads} torch thread(s)"


def write_markdown(result: dict[str, Any], path: Path) -> Path:
    """The dated result file: command, machine, the frontier table and per-class IoU."""
    lat = result["latency"]
    q = result["quality"]
    lines = [f"# DDP frontier: steps x draws x noise grid ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `{result.get('command') or 'bev-ddp bench frontier'}`", "",
             f"Machine: {result['machine']}", ""]
    if lat:
        lines += [f"Latency: `{lat['config']}`, random weights, {lat['points']} LiDAR points, {lat['repeats']} "
                  f"repeat(s); whole model = encoders ({lat['encoder_s']:.2f} s) + head; baseline head "
                  f"{lat['baseline_head_s']:.2f} s (whole model {lat['baseline_total_s']:.2f} s). Grid `encoder`: "
                  "the noisy map and the decoder's layers on the encoder grid, logits resized to the label grid.", ""]
    else:
        lines += ["Latency: not measured in this run (`--no-latency`).", ""]
    if q:
        lines += [f"Quality: `{q['checkpoint']}` ({q['config']}), {q['samples']} held-out samples; noise grid "
                  f"{q['noise_grid']}, encoder grid {q['encoder_grid']}, label grid {q['label_grid']}"
                  + (" (they coincide: the grid axis changes latency only)" if q["grids_coincide"] else "")
                  + (f"; baseline `{q['baseline_checkpoint']}`" if q.get("baseline_checkpoint") else "") + ".", "",
                  "AUROC: uncertainty as a score for wrong cells, a cell wrong when any class's mask at 0.50 is wrong, "
                  "score = maximum over classes, for error_probability 1 - prod_k (1 - e_k) (`pixels`); \"best AUROC "
                  "per class\": the best estimator when every (class, cell) is one prediction, wrong when that "
                  "class's mask is wrong (`class_cells`). IoU in %.", ""]
    lines += [markdown_table(result["rows"]), ""]
    points = [QualityPoint(**p) for p in result["quality_points"]]
    base = QualityPoint(**result["baseline_quality"]) if result["baseline_quality"] else None
    if points:
        lines += ["Per-class IoU (%) at threshold 0.50 / at the best threshold:", "", markdown_per_class(points, base), ""]
    return write_text_atomic(path, "\n".join(lines))


def run_frontier(args: argparse.Namespace) -> dict[str, Any]:
    from bev_ddp.bev.build import label_grid
    from bev_ddp.data.geometry import Bound

    steps = _ints(args.steps, "--steps") if args.steps else None  # None: the model's own default
    draws = _ints(args.draws, "--draws")
    grids = [g.strip() for g in str(args.grids).split(",") if g.strip()]
    if not grids or any(g not in NOISE_GRIDS for g in grids):
        from bev_ddp.errors import InputError

        raise InputError(f"--grids must be a comma-separated subset of {', '.join(NOISE_GRIDS)}, got {args.grids!r}")
    torch.set_num_threads(args.threads)
    quality = baseline = None
    quality_grid, coincide, quality_info = None, False, {}
    if args.checkpoint:
        cfg, model = _load_trained(args.config, args.checkpoint)
        steps = steps or [model.steps]
        batches = _held_out_batches(cfg, args.max_samples)
        quality = measure_quality(model, batches, classes=list(cfg.data.classes), steps=steps, draws=draws,
                                  seed=args.seed)
        quality_grid = f"{cfg.model.head.ddp.noise_grid} (decoder on the {cfg.model.head.ddp.decoder_grid} grid)"
        scope = cfg.model.head.input_scope
        enc = (Bound.of(scope[0]).cells, Bound.of(scope[1]).cells)
        lab = label_grid(cfg.data.xbound, cfg.data.ybound)
        coincide = enc == lab and list(scope[0]) == list(cfg.data.xbound) and list(scope[1]) == list(cfg.data.ybound)
        quality_info = {"config": args.config or "carried by the checkpoint", "checkpoint": args.checkpoint, "samples": sum(
            b["gt_masks_bev"].shape[0] for b in batches), "noise_grid": quality_grid, "encoder_grid": list(enc),
            "label_grid": list(lab), "grids_coincide": coincide}
        if args.baseline_checkpoint:
            bcfg, bmodel = _load_trained(args.baseline_config, args.baseline_checkpoint)
            baseline = measure_baseline_quality(bmodel, _held_out_batches(bcfg, args.max_samples),
                                                classes=list(bcfg.data.classes))
            quality_info.update(baseline_config=args.baseline_config or "carried by the checkpoint",
                                baseline_checkpoint=args.baseline_checkpoint)
    latency = None if args.no_latency else measure_latency(
        config=args.latency_config, overrides=list(args.overrides), steps=steps, draws=draws, grids=grids,
        repeats=args.repeats, points=args.points, threads=args.threads, seed=args.seed)
    rows = frontier_rows(latency, quality, baseline, quality_grid, coincide)
    return {
        "auroc_definition": AUROC_DEFINITION,
        "latency": None if latency is None else asdict(latency),
        "quality": quality_info,
        "quality_points": [asdict(q) for q in quality or []],
        "baseline_quality": None if baseline is None else asdict(baseline),
        "rows": rows,
        "machine": machine_description(args.threads),
    }


def _ints(text: str, flag: str) -> list[int]:
    from bev_ddp.errors import InputError

    try:
        values = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise InputError(f"{flag} must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{flag} must be comma-separated positive integers, got {text!r}")
    return sorted(set(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", default=None, help="sampling step counts, e.g. 1,2,3,5 (default: the model's "
                        "model.head.ddp.steps: the checkpoint's, else the latency config's)")
    parser.add_argument("--draws", default="1,2,4", help="noise draws K, run as one batch (default 1,2,4)")
    parser.add_argument("--grids", default="label,encoder", help="noise grids (default label,encoder)")
    parser.add_argument("--latency-config", default=DEFAULT_LATENCY_CONFIG,
                        help=f"config whose latency is measured, random weights (default {DEFAULT_LATENCY_CONFIG})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the latency config")
    parser.add_argument("--config", help="config the DDP checkpoint was trained with (default: the one it carries); "
                        "its held-out split is scored")
    parser.add_argument("--checkpoint", help="trained DDP checkpoint or run folder; without it only latency is measured")
    parser.add_argument("--baseline-config", help="config the baseline checkpoint was trained with (default: the one "
                        "it carries)")
    parser.add_argument("--baseline-checkpoint", help="trained baseline-head checkpoint or run folder (same budget)")
    parser.add_argument("--max-samples", type=int, default=None, help="score only the first N held-out samples")
    parser.add_argument("--no-latency", action="store_true", help="quality only (needs --checkpoint)")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats; medians are reported (default 1)")
    parser.add_argument("--points", type=int, default=250_000, help="LiDAR points of the latency input")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="draw d starts from seed + d")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, help="write the frontier plot (PNG) here")
    parser.add_argument("--markdown", type=Path, help="write the result as markdown (command, machine, tables) here")


def run(args: argparse.Namespace) -> int:
    from bev_ddp.errors import InputError

    if args.repeats < 1 or args.points < 0 or args.threads < 1:
        raise InputError("--repeats and --threads must be >= 1 and --points >= 0")
    if args.no_latency and not args.checkpoint:
        raise InputError("--no-latency needs a --checkpoint (there is nothing else to measure)")
    if args.baseline_checkpoint and not args.checkpoint:
        raise InputError("--baseline-checkpoint needs a DDP --checkpoint")
    for path, what in ((args.out, "--out"), (args.markdown, "--markdown"), (args.plot, "--plot")):
        if path is not None:  # before the measurements, which take minutes
            probe_output_dir(Path(path).parent, what=f"{what} folder")
    result = run_frontier(args)
    result["command"] = "bev-ddp " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    print(markdown_table(result["rows"]))
    if args.out:
        print(f"wrote {write_text_atomic(args.out, json.dumps(result, indent=2))}")
    if args.markdown:
        print(f"wrote {write_markdown(result, args.markdown)}")
    if args.plot:
        from bev_ddp.report.uncertainty_plots import plot_frontier

        path = write_via_tmp(args.plot, lambda tmp: plot_frontier(result["rows"], tmp))
        if path is not None:
            print(f"wrote {path}")
    return 0
