"""The main job end to end on a CPU: synthetic town → infos → train → evaluate → report.

Stages (each prints its progress):

1. ``generate_world``: a procedurally generated town in nuScenes format, written at the
   network's image size (reused when the folder already holds one with the same settings).
2. ``create_infos``: info files with a deterministic scene split (train / held-out val scenes).
3. Training of the tiny fusion DDP config for ``iters`` steps, the last ``self_aligned_iters``
   of them with self-aligned denoising (paper Alg. 4); the model is evaluated at steps 1 and 3
   on the held-out scenes once just before the self-aligned phase and once after it.
4. The report of the final evaluation, and ``summary.json`` / ``summary.md`` with the numbers
   before and after self-aligned fine-tuning and the time of every stage.
"""
from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bev_ddp.config import load_config
from bev_ddp.errors import InputError
from bev_ddp.engine.interrupt import Interrupted
from bev_ddp.output_files import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"


@dataclass
class DemoSettings:
    """Sizes of the demo run; :meth:`quick` is the small variant used by tests."""

    out_dir: Path = Path("work_dirs/demo")
    config: Path = DEFAULT_CONFIG
    scenes: int = 4  # the last quarter (>= 1) are held out for evaluation
    samples_per_scene: int = 20
    seed: int = 0
    iters: int = 300
    self_aligned_iters: int = 60
    steps: tuple[int, ...] = (1, 3)
    overrides: list[str] = field(default_factory=list)

    @staticmethod
    def quick(out_dir: Path, **kw: Any) -> "DemoSettings":
        return DemoSettings(out_dir=out_dir, scenes=2, samples_per_scene=6, iters=40, self_aligned_iters=10, **kw)


@dataclass
class DemoResult:
    """What the demo measured. IoU values are fractions; keys of the dicts are step counts."""

    report_dir: Path
    world_dir: Path
    work_dir: Path
    checkpoint: Path
    config: Any  # the resolved training config
    per_class_before: dict[int, dict[str, float]]  # evaluation before self-aligned fine-tuning
    per_class_after: dict[int, dict[str, float]]
    per_class50_before: dict[int, dict[str, float]]  # the same at threshold 0.50
    per_class50_after: dict[int, dict[str, float]]
    miou_before: dict[int, float]  # mean of per-class maxima over thresholds (BEVFusion's number)
    miou_after: dict[int, float]
    miou50_before: dict[int, float]  # at the single threshold 0.5
    miou50_after: dict[int, float]
    auroc_after: dict[int, float | None]
    stage_seconds: dict[str, float]
    num_train: int
    num_val: int


@contextmanager
def _stage(name: str, index: int, total: int, log: Callable[[str], None], times: dict[str, float]) -> Iterator[None]:
    """Print the start and the end (with its duration) of one demo stage; record the duration."""
    log(f"[{index}/{total}] {name} ...")
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start
    log(f"[{index}/{total}] {name}: done in {times[name]:.1f} s")


def run_demo(settings: DemoSettings, *, log: Callable[[str], None] = print, progress: bool = True) -> DemoResult:
    """Run every stage; returns the figures (also written to ``<out_dir>/summary.{json,md}``)."""
    from bev_ddp.bev.task import TASK
    from bev_ddp.data.synthetic import WorldSettings, generate_world
    from bev_ddp.engine.trainer import train
    from bev_ddp.data.create_infos import create_infos
    from bev_ddp.data.infos import read_infos

    out = Path(settings.out_dir)
    world = out / "world"
    times: dict[str, float] = {}
    if settings.self_aligned_iters >= settings.iters:
        raise InputError("self_aligned_iters must be smaller than iters")
    probe = load_config(settings.config, settings.overrides, schema=TASK.schema)
    wanted = WorldSettings(seed=settings.seed, num_scenes=settings.scenes, samples_per_scene=settings.samples_per_scene,
                           image_size=(int(probe.data.image_size[0]), int(probe.data.image_size[1])))
    with _stage("synthesize a town", 1, 4, log, times):
        if _existing_world(world) == wanted:
            log(f"    reusing the town in {world}")
        else:
            generate_world(world, num_scenes=wanted.num_scenes, samples_per_scene=wanted.samples_per_scene,
                           seed=wanted.seed, image_size=wanted.image_size, location=wanted.location,
                           lidar_azimuth_steps=wanted.lidar_azimuth_steps, town_size=wanted.town_size,
                           version=wanted.version)
    with _stage("prepare info files", 2, 4, log, times):
        infos = create_infos(world, "v1.0-mini", world / "infos", max_sweeps=probe.data.load_sweeps)
        counts = {name: len(read_infos(p)[1]) for name, p in infos.items()}
        log(f"    {counts.get('train', 0)} training and {counts.get('val', 0)} held-out samples")
    work_dir = out / "train"
    if work_dir.exists():
        shutil.rmtree(work_dir)  # a fresh run; the world is kept
    before_sa = settings.iters - settings.self_aligned_iters
    cfg = load_config(
        settings.config,
        [
            f"data.dataroot={world}",
            f"data.info_dir={world / 'infos'}",
            f"train.iters={settings.iters}",
            f"train.self_aligned_iters={settings.self_aligned_iters}",
            f"train.eval_interval={before_sa}",
            f"train.checkpoint_interval={before_sa}",
            f"train.seed={settings.seed}",
            f"train.work_dir={work_dir}",
            f"eval.steps=[{','.join(map(str, settings.steps))}]",
            *settings.overrides,
        ],
        schema=TASK.schema,
    )
    with _stage(f"train {settings.iters} iterations (last {settings.self_aligned_iters} self-aligned) + evaluate",
                3, 4, log, times):
        result = train(cfg, task=TASK, work_dir=work_dir, progress=progress)
        if result.signum is not None:  # the checkpoint is saved; no report from a partial training
            raise Interrupted(result.signum)
    with _stage("write the report", 4, 4, log, times):
        before = result.evals[before_sa].metrics
        after = result.evals[settings.iters].metrics
        report_dir = out / "report"
        if report_dir.exists():
            shutil.rmtree(report_dir)
        shutil.copytree(work_dir / "eval" / f"iter_{settings.iters:07d}", report_dir)
        demo = DemoResult(
            report_dir=report_dir,
            world_dir=world,
            work_dir=work_dir,
            checkpoint=work_dir / "latest.pth",
            config=cfg,
            per_class_before={int(s): e["per_class"] for s, e in before["steps"].items()},
            per_class_after={int(s): e["per_class"] for s, e in after["steps"].items()},
            per_class50_before={int(s): e["per_class@0.50"] for s, e in before["steps"].items()},
            per_class50_after={int(s): e["per_class@0.50"] for s, e in after["steps"].items()},
            miou_before={int(s): e["summary"]["mIoU"] for s, e in before["steps"].items()},
            miou_after={int(s): e["summary"]["mIoU"] for s, e in after["steps"].items()},
            miou50_before={int(s): e["summary"]["mIoU@0.50"] for s, e in before["steps"].items()},
            miou50_after={int(s): e["summary"]["mIoU@0.50"] for s, e in after["steps"].items()},
            auroc_after={int(s): e["uncertainty"]["auroc"] for s, e in after["steps"].items()},
            stage_seconds=times,
            num_train=counts.get("train", 0),
            num_val=counts.get("val", 0),
        )
        _write_summary(demo, settings, out)
    return demo


def _existing_world(path: Path) -> Any:
    """Settings of the synthetic world already in ``path``, or None."""
    from bev_ddp.data.synthetic import load_settings

    try:
        return load_settings(path)
    except InputError:
        return None


def _write_summary(demo: DemoResult, settings: DemoSettings, out: Path) -> None:
    data = {k: v for k, v in asdict(demo).items() if k != "config"}
    data.update({k: str(getattr(demo, k)) for k in ("report_dir", "world_dir", "work_dir", "checkpoint")})
    data["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    write_text_atomic(out / "summary.json", json.dumps(data, indent=2))
    steps = sorted(demo.per_class_after)
    before = settings.iters - settings.self_aligned_iters
    head = "| class | " + " | ".join(f"{s} step{'s' if s > 1 else ''}, iter {before} | {s}, iter {settings.iters}"
                                     for s in steps) + " |"
    lines = [
        "# Demo: tiny fusion DDP model on the synthetic town",
        "",
        f"{demo.num_train} training samples, {demo.num_val} held-out samples (other scenes); per class: IoU in % "
        "at threshold 0.50 / max over thresholds 0.35-0.65 (BEVFusion protocol). Iterations "
        f"{before + 1}-{settings.iters} are self-aligned fine-tuning (paper Alg. 4).",
        "",
        head,
        "|---|" + "---:|" * (2 * len(steps)),
    ]
    for name in demo.per_class_after[steps[0]]:
        cells = [f"{demo.per_class50_before[s][name] * 100:.1f} / {demo.per_class_before[s][name] * 100:.1f} | "
                 f"{demo.per_class50_after[s][name] * 100:.1f} / {demo.per_class_after[s][name] * 100:.1f}" for s in steps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"{demo.miou_before[s] * 100:.1f} | {demo.miou_after[s] * 100:.1f}" for s in steps]
    lines.append("| **mIoU** | " + " | ".join(cells) + " |")
    cells = [f"{demo.miou50_before[s] * 100:.1f} | {demo.miou50_after[s] * 100:.1f}" for s in steps]
    lines.append("| mIoU@0.50 | " + " | ".join(cells) + " |")
    lines += ["", "Stage times (s): " + ", ".join(f"{k}: {v:.1f}" for k, v in demo.stage_seconds.items()), ""]
    write_text_atomic(out / "summary.md", "\n".join(lines))


def headline(demo: DemoResult) -> str:
    """A few lines for the console."""
    steps = sorted(demo.miou_after)
    lines = [f"report: {demo.report_dir / 'report.md'}"]
    for s in steps:
        auroc = demo.auroc_after.get(s)
        lines.append(
            f"  {s} step{'s' if s > 1 else ''}: mIoU {demo.miou_before[s] * 100:.1f} before the self-aligned phase -> "
            f"{demo.miou_after[s] * 100:.1f} after it (mIoU@0.50 {demo.miou50_after[s] * 100:.1f})"
            + (f", uncertainty AUROC {auroc:.2f}" if auroc is not None else "")
        )
    best, at50 = demo.per_class_after[steps[-1]], demo.per_class50_after[steps[-1]]
    lines.append("  per-class IoU at 0.50 / best threshold (" + f"{steps[-1]} steps): "
                 + ", ".join(f"{k} {at50[k] * 100:.1f} / {v * 100:.1f}" for k, v in best.items()))
    return "\n".join(lines)
