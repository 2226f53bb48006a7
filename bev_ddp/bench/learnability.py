"""``bev-ddp bench learnability``: the BEV heads' learnability recipe (v2), several training seeds.

Recipe v2 (``docs/thin_classes.md`` says how it was chosen): one synthetic town (``--scenes`` scenes
of ``--samples-per-scene`` keyframes, world seed 0, the last quarter of the scenes held out), map
labels on a 0.5 m grid (128 x 128 over +-32 m, so a divider or a stop line is one or two cells
wide) while the encoders keep their 1 m grid, ``--iters`` iterations of batch 2 (the last
``--self-aligned-iters`` self-aligned for DDP heads; the conv head has no sampler), evaluation on
the held-out scenes at the end.  Every run is ``bev-ddp train CONFIG <recipe overrides> <run
overrides> train.seed=S`` in ``OUT/runs/<name>/seed<S>/``; a run whose evaluation is already there
with the same config and the same town (``world.json``) is reused, so an interrupted study resumes
where it stopped.

A run is ``NAME BASE [key=value ...]`` (``--run``, repeatable): ``BASE`` is ``baseline`` (the tiny
fusion model with BEVFusion's conv head) or ``ddp`` (with the DDP head, the project's defaults).
Default runs: ``baseline`` and ``ddp``.  A rescoring (``--rescore NAME RUN key=value ...``) is a row
without training: the final checkpoint of each seed of ``RUN`` scored again with inference-only
overrides (the evaluation protocol, the re-encoding), in ``OUT/runs/RUN/seed<S>/rescore/NAME/``.

Output: ``OUT/summary.json`` and ``OUT/summary.md`` (``--summary NAME``: ``OUT/NAME.*``): per run and step count, per-class IoU at
threshold 0.50 and at the best threshold, mIoU@0.50 and mIoU, each as the mean over seeds and the
spread (max - min) over seeds, in %.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from bev_ddp.data.synthetic import WorldSettings

ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIGS = {"baseline": ROOT / "configs" / "bev" / "synth_tiny_fusion_baseline.yaml",
                "ddp": ROOT / "configs" / "bev" / "synth_tiny_fusion_ddp.yaml"}


@dataclass(frozen=True)
class Recipe:
    """Settings shared by every run of a study (the world, the label grid and the training budget)."""

    scenes: int = 12  # the last quarter held out
    samples_per_scene: int = 16
    world_seed: int = 0
    label_resolution: float = 0.5  # m per map-label cell; the encoders keep the config's 1 m grid
    iters: int = 1200
    self_aligned_iters: int = 200  # DDP heads only
    steps: tuple[int, ...] = (1, 2, 3)  # DDP heads only; the conv head has one prediction

    def world_settings(self) -> WorldSettings:
        """The synthetic town of the study (written once by :func:`ensure_world`)."""
        from bev_ddp.data.synthetic import WorldSettings

        return WorldSettings(seed=self.world_seed, num_scenes=self.scenes, samples_per_scene=self.samples_per_scene,
                             image_size=(96, 176))

    def overrides(self, world: Path, *, ddp: bool) -> list[str]:
        """Config overrides of the recipe for one head (the run's own come after them)."""
        r = self.label_resolution
        head = ([f"train.self_aligned_iters={self.self_aligned_iters}",
                 f"eval.steps=[{','.join(map(str, self.steps))}]"] if ddp
                else ["train.self_aligned_iters=0", "eval.steps=[1]"])
        return [f"data.dataroot={world}", f"data.info_dir={world / 'infos'}",
                f"data.xbound=[-32.0,32.0,{r}]", f"data.ybound=[-32.0,32.0,{r}]",
                f"train.iters={self.iters}", f"train.eval_interval={self.iters}",
                f"train.checkpoint_interval={self.iters}", *head]


@dataclass(frozen=True)
class RunSpec:
    """One row of a study: a base config and its overrides."""

    name: str
    base: str
    overrides: tuple[str, ...] = ()


@dataclass
class RunResult:
    """The held-out evaluation of one (run, seed): IoU fractions per step count and class."""

    name: str
    seed: int
    seconds: float | None  # training + evaluation wall time; None when reused
    iou50: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> class -> IoU at 0.50
    iou_best: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> class -> IoU at the best threshold


@dataclass(frozen=True)
class RescoreSpec:
    """A row without training: the final checkpoints of run ``run`` scored again with inference-only
    overrides (``model.head.ddp.eval_protocol``, ``reencode``, ``eval_draws``...)."""

    name: str
    run: str
    overrides: tuple[str, ...] = ()

    def on(self, trained: RunSpec) -> RunSpec:
        """The row as a run spec: ``trained``'s base and overrides, then the rescoring's."""
        return RunSpec(self.name, trained.base, (*trained.overrides, *self.overrides))


def parse_runs(raw: Sequence[Sequence[str]] | None) -> list[RunSpec]:
    """``--run NAME BASE [key=value ...]`` values -> run specs (default: baseline and ddp)."""
    from bev_ddp.errors import InputError

    if not raw:
        return [RunSpec("baseline", "baseline"), RunSpec("ddp", "ddp")]
    specs = []
    for item in raw:
        if len(item) < 2 or item[1] not in BASE_CONFIGS or any("=" not in o for o in item[2:]):
            raise InputError(f"--run takes NAME BASE [key=value ...] with BASE one of {', '.join(BASE_CONFIGS)}, "
                             f"got {' '.join(item)!r}")
        specs.append(RunSpec(item[0], item[1], tuple(item[2:])))
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or any(not n.replace("_", "").replace("-", "").isalnum() for n in names):
        raise InputError(f"--run names must be unique words (letters, digits, - and _), got {names}")
    return specs


def parse_rescores(raw: Sequence[Sequence[str]] | None, specs: Sequence[RunSpec]) -> list[RescoreSpec]:
    """``--rescore NAME RUN key=value [...]`` values -> rescore specs; RUN names one of ``specs``."""
    from bev_ddp.errors import InputError

    out, runs = [], {s.name for s in specs}
    for item in raw or ():
        if len(item) < 3 or item[1] not in runs or any("=" not in o for o in item[2:]):
            raise InputError(f"--rescore takes NAME RUN key=value [...] with RUN one of {', '.join(sorted(runs))}, "
                             f"got {' '.join(item)!r}")
        out.append(RescoreSpec(item[0], item[1], tuple(item[2:])))
    names = [s.name for s in specs] + [s.name for s in out]
    if len(set(names)) != len(names) or any(not n.replace("_", "").replace("-", "").isalnum() for n in names):
        raise InputError(f"--run and --rescore names must be unique words (letters, digits, - and _), got {names}")
    return out


def ensure_world(world: Path, recipe: Recipe, *, log=print) -> None:
    """Write the recipe's synthetic town and its info files into ``world`` unless they are there."""
    from bev_ddp.data.create_infos import create_infos
    from bev_ddp.data.synthetic import generate_world, load_settings
    from bev_ddp.errors import InputError

    wanted = recipe.world_settings()
    try:
        have = load_settings(world)
    except InputError:  # no world, or a malformed world file: write it
        have = None
    if have != wanted:
        log(f"writing the synthetic town ({recipe.scenes} scenes x {recipe.samples_per_scene}) to {world}")
        generate_world(world, num_scenes=wanted.num_scenes, samples_per_scene=wanted.samples_per_scene,
                       seed=wanted.seed, image_size=wanted.image_size)
    if not (world / "infos" / "bev_ddp_infos_val.json").exists() or have != wanted:
        create_infos(world, wanted.version, world / "infos", max_sweeps=2)


WORLD_FILE = "world.json"  # beside a finished run or rescoring: the town it was trained / scored on


def _world_of(recipe: Recipe) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(recipe.world_settings())))  # tuples -> lists, as read back


def _finished(folder: Path, metrics_path: Path, cfg: Any, recipe: Recipe) -> bool:
    """A finished run or rescoring with this config on this recipe's town (the config names the
    world's folder, not what it holds: a town rewritten under the same path is another world)."""
    from omegaconf import OmegaConf

    saved, world = folder / "config.yaml", folder / WORLD_FILE
    return (metrics_path.exists() and saved.exists() and world.exists()
            and json.loads(world.read_text()) == _world_of(recipe) and _plain(OmegaConf.load(saved)) == _plain(cfg))


def run_config(spec: RunSpec, seed: int, recipe: Recipe, world: Path) -> Any:
    from bev_ddp.bev.task import TASK
    from bev_ddp.config import load_config

    return load_config(BASE_CONFIGS[spec.base],
                       [*recipe.overrides(world, ddp=spec.base == "ddp"), *spec.overrides, f"train.seed={seed}"],
                       schema=TASK.schema)


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    d = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))  # tuples -> lists, as saved
    d.get("train", {}).pop("work_dir", None)
    return d


def read_result(spec: RunSpec, seed: int, metrics: dict[str, Any], seconds: float | None) -> RunResult:
    """IoU at 0.50 and at the best threshold from an evaluation's ``metrics.json``."""
    out = RunResult(name=spec.name, seed=seed, seconds=seconds)
    for step, entry in metrics["steps"].items():
        table = entry["per_threshold"]
        at = min(range(len(table["thresholds"])), key=lambda i: abs(table["thresholds"][i] - 0.5))
        out.iou50[step] = {c: v[at] for c, v in table["per_class"].items()}
        out.iou_best[step] = dict(entry["per_class"])
    return out


def train_run(spec: RunSpec, seed: int, recipe: Recipe, world: Path, run_dir: Path, *, log=print) -> RunResult:
    """Train and evaluate one (run, seed) in ``run_dir``, or reuse the evaluation found there."""
    from bev_ddp.bev.task import TASK
    from bev_ddp.engine.interrupt import Interrupted
    from bev_ddp.engine.trainer import train
    from bev_ddp.output_files import write_text_atomic

    cfg = run_config(spec, seed, recipe, world)
    metrics_path = run_dir / "eval" / f"iter_{recipe.iters:07d}" / "metrics.json"
    if _finished(run_dir, metrics_path, cfg, recipe):
        log(f"{spec.name} seed {seed}: reusing {metrics_path}")
        return read_result(spec, seed, json.loads(metrics_path.read_text()), None)
    log(f"{spec.name} seed {seed}: training {recipe.iters} iterations in {run_dir}")
    start = time.perf_counter()
    result = train(cfg, task=TASK, work_dir=run_dir, progress=False)
    if result.signum is not None:
        raise Interrupted(result.signum)
    seconds = time.perf_counter() - start
    write_text_atomic(run_dir / WORLD_FILE, json.dumps(_world_of(recipe)))
    return read_result(spec, seed, result.evals[recipe.iters].metrics, seconds)


def rescore_run(spec: RescoreSpec, trained: RunSpec, seed: int, recipe: Recipe, world: Path, run_dir: Path, *,
                log=print) -> RunResult:
    """Score the final checkpoint of ``trained`` (in ``run_dir``) again with ``spec``'s overrides, in
    ``run_dir/rescore/<name>/``; a finished rescoring with the same config is reused."""
    import torch
    from omegaconf import OmegaConf

    from bev_ddp.bev.task import TASK
    from bev_ddp.engine.checkpoint import load_model_weights
    from bev_ddp.engine.evaluation import evaluate_task
    from bev_ddp.engine.interrupt import Interrupted, StopRequest
    from bev_ddp.output_files import write_text_atomic

    row = spec.on(trained)
    cfg = run_config(row, seed, recipe, world)
    out = run_dir / "rescore" / spec.name
    saved, metrics_path = out / "config.yaml", out / "metrics.json"
    if _finished(out, metrics_path, cfg, recipe):
        log(f"{spec.name} seed {seed}: reusing {metrics_path}")
        return read_result(row, seed, json.loads(metrics_path.read_text()), None)
    log(f"{spec.name} seed {seed}: scoring {run_dir.name} of {trained.name} with {' '.join(spec.overrides)}")
    start = time.perf_counter()
    model = TASK.build_model(cfg)
    load_model_weights(model, run_dir / "checkpoints" / f"iter_{recipe.iters:07d}.pth")
    with StopRequest() as stop:  # SIGINT / SIGTERM: stop between batches, write no report, mark nothing finished
        result = evaluate_task(cfg, TASK, model, device=torch.device("cpu"), out_dir=out, progress=False, stop=stop)
    if result.interrupted:
        raise Interrupted(stop.signum or signal.SIGTERM)
    write_text_atomic(out / WORLD_FILE, json.dumps(_world_of(recipe)))
    write_text_atomic(saved, OmegaConf.to_yaml(cfg))  # last: marks the rescoring finished
    return read_result(row, seed, result.metrics, time.perf_counter() - start)


def coarse_grid_counts(gt: "torch.Tensor", coarse: tuple[int, int]) -> dict[str, "torch.Tensor"]:
    """Per-class cell counts of what shrinking label masks to the encoder grid loses.

    Args:
        gt: bool [B, K, X, Y] masks on the label grid.
        coarse: the encoder grid (x, y).
    Returns:
        [K] float64 tensors: ``total`` label cells of the class; ``kept``: of them, those whose
        coarse cell holds the class after nearest shrinking (``target_pooling: nearest``);
        ``tp`` / ``fp`` / ``fn`` of the *coarse-fraction map* (each coarse cell's covered fraction,
        resized bilinearly to the label grid as the head resizes its output, thresholded at 0.50).
    """
    import torch
    import torch.nn.functional as F

    from bev_ddp.diffusion.encoding import resize_nearest  # the encoders' target shrinking

    size = tuple(gt.shape[-2:])
    back = resize_nearest(resize_nearest(gt, coarse), size)  # each label cell reads its coarse cell
    frac = F.adaptive_avg_pool2d(gt.float(), coarse)  # [B, K, x, y] covered fraction
    pred = F.interpolate(frac, size=size, mode="bilinear", align_corners=False) >= 0.5

    def count(x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(0, 2, 3)).double()

    return {"total": count(gt), "kept": count(back & gt), "tp": count(pred & gt), "fp": count(pred & ~gt),
            "fn": count(~pred & gt)}


def grid_oracle(cfg: Any) -> dict[str, dict[str, float]]:
    """What the encoder grid itself costs each class on the held-out labels, before any training
    (:func:`coarse_grid_counts` summed over the held-out split of ``cfg``; the encoder grid is
    ``model.head.input_scope``).

    Returns:
        ``{class: {"kept_by_nearest": f, "coarse_fraction_iou": f}}`` (fractions; ``max`` pooling
        keeps every label cell by construction).
    """
    import torch

    from bev_ddp.bev.task import TASK
    from bev_ddp.data.geometry import Bound

    scope = cfg.model.head.input_scope
    coarse = (Bound.of(scope[0]).cells, Bound.of(scope[1]).cells)
    dataset = TASK.build_dataset(cfg, cfg.eval.split)
    sums: dict[str, torch.Tensor] = {}
    for i in range(len(dataset)):
        gt = torch.as_tensor(dataset[i]["gt_masks_bev"])[None] > 0.5  # [1, K, X, Y] on the label grid
        for key, value in coarse_grid_counts(gt, coarse).items():
            sums[key] = sums.get(key, 0) + value
    iou = sums["tp"] / (sums["tp"] + sums["fp"] + sums["fn"]).clamp_min(1)
    kept = sums["kept"] / sums["total"].clamp_min(1)
    return {c: {"kept_by_nearest": float(kept[j]), "coarse_fraction_iou": float(iou[j])}
            for j, c in enumerate(cfg.data.classes)}


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "spread": max(values) - min(values), "min": min(values),
            "max": max(values)}


def summarize(specs: Sequence[RunSpec], results: Sequence[RunResult]) -> dict[str, Any]:
    """Per run and step count: mean and spread over seeds of every class's IoU and of the means."""
    out: dict[str, Any] = {}
    for spec in specs:
        mine = [r for r in results if r.name == spec.name]
        if not mine:
            continue
        steps: dict[str, Any] = {}
        for step in mine[0].iou50:
            classes = list(mine[0].iou50[step])
            entry: dict[str, Any] = {"at_0.50": {}, "best": {}}
            for key, attr in (("at_0.50", "iou50"), ("best", "iou_best")):
                for c in classes:
                    entry[key][c] = _stats([getattr(r, attr)[step][c] for r in mine])
                entry[key]["mean IoU"] = _stats([sum(getattr(r, attr)[step].values()) / len(classes) for r in mine])
            steps[step] = entry
        seconds = [r.seconds for r in mine if r.seconds is not None]
        out[spec.name] = {"base": spec.base, "overrides": list(spec.overrides), "seeds": [r.seed for r in mine],
                          "seconds": seconds, "steps": steps}
    return out


def markdown_summary(summary: dict[str, Any], recipe: Recipe) -> str:
    """Per-class tables: IoU@0.50 mean ± spread over seeds (%), then the best-threshold means."""
    lines = [f"Recipe: {asdict(recipe)}", ""]
    rows = [(name, step, entry) for name, s in summary.items() for step, entry in s["steps"].items()]
    if not rows:
        return "\n".join(lines)
    classes = list(rows[0][2]["at_0.50"])
    head = "| run | steps | seeds | " + " | ".join(classes) + " |"
    rule = "|---|---:|---:|" + "---:|" * len(classes)
    for key, title in (("at_0.50", "IoU at threshold 0.50, mean ± spread (max − min) over seeds, %"),
                       ("best", "IoU at each class's best threshold, mean ± spread over seeds, %")):
        lines += [f"### {title}", "", head, rule]
        for name, step, entry in rows:
            cells = [f"{100 * entry[key][c]['mean']:.1f} ± {100 * entry[key][c]['spread']:.1f}" for c in classes]
            lines.append(f"| {name} | {step} | {len(summary[name]['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Runs: " + "; ".join(f"`{n}` = {s['base']} {' '.join(s['overrides'])}".rstrip()
                                   for n, s in summary.items()), ""]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Recipe()
    parser.add_argument("--out", type=Path, required=True, help="study folder: world/, runs/, summary.{json,md}")
    parser.add_argument("--run", nargs="+", action="append", metavar="NAME BASE [key=value]",
                        help="a run: NAME, BASE (baseline | ddp) and config overrides; repeatable "
                             "(default: baseline and ddp)")
    parser.add_argument("--rescore", nargs="+", action="append", metavar="NAME RUN key=value",
                        help="a row without training: the final checkpoints of run RUN scored again with "
                             "inference-only overrides (e.g. model.head.ddp.eval_protocol=mean_draws_steps); repeatable")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    parser.add_argument("--iters", type=int, default=d.iters, help=f"training iterations (default {d.iters})")
    parser.add_argument("--self-aligned-iters", type=int, default=d.self_aligned_iters,
                        help=f"of which self-aligned, DDP heads only (default {d.self_aligned_iters})")
    parser.add_argument("--scenes", type=int, default=d.scenes, help=f"scenes of the town (default {d.scenes})")
    parser.add_argument("--samples-per-scene", type=int, default=d.samples_per_scene,
                        help=f"keyframes per scene (default {d.samples_per_scene})")
    parser.add_argument("--label-resolution", type=float, default=d.label_resolution,
                        help=f"map-label cell size, m (default {d.label_resolution})")
    parser.add_argument("--steps", default=",".join(map(str, d.steps)),
                        help="DDP sampling step counts evaluated (default 1,2,3)")
    parser.add_argument("--grid-oracle", action="store_true", help="also measure what the encoder grid costs each "
                        "class on the held-out labels, without training (OUT/grid_oracle.{json,md})")
    parser.add_argument("--summary", default="summary", help="name of this invocation's tables, OUT/NAME.{json,md} "
                        "(default summary); studies sharing OUT share the town and reuse each other's runs")


def run(args: argparse.Namespace) -> int:
    from bev_ddp.errors import InputError
    from bev_ddp.output_files import probe_output_dir, write_text_atomic

    try:
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
        steps = tuple(int(s) for s in str(args.steps).split(",") if s.strip())
    except ValueError as exc:
        raise InputError(f"--seeds and --steps take comma-separated integers: {exc}") from exc
    if not seeds or not steps or min(steps) < 1:
        raise InputError("--seeds and --steps need at least one value (steps >= 1)")
    if not 0 <= args.self_aligned_iters < args.iters:
        raise InputError(f"--self-aligned-iters must be in [0, --iters), got {args.self_aligned_iters}")
    if not args.summary.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"--summary must be a word (letters, digits, - and _), got {args.summary!r}")
    if args.scenes < 2 or args.samples_per_scene < 1 or args.label_resolution <= 0:
        raise InputError("--scenes must be >= 2, --samples-per-scene >= 1 and --label-resolution > 0")
    recipe = Recipe(scenes=args.scenes, samples_per_scene=args.samples_per_scene,
                    label_resolution=args.label_resolution, iters=args.iters,
                    self_aligned_iters=args.self_aligned_iters, steps=steps)
    specs = parse_runs(args.run)
    rescores = parse_rescores(args.rescore, specs)
    out = probe_output_dir(args.out, what="--out folder")
    trained_of = {s.name: s for s in specs}
    rows = [*specs, *(r.on(trained_of[r.run]) for r in rescores)]
    for row in rows:  # every config is checked before the first training
        run_config(row, seeds[0], recipe, out / "world")
    ensure_world(out / "world", recipe)
    if args.grid_oracle:
        oracle = grid_oracle(run_config(RunSpec("ddp", "ddp"), seeds[0], recipe, out / "world"))
        write_text_atomic(out / "grid_oracle.json", json.dumps({"recipe": asdict(recipe), "classes": oracle}, indent=2))
        lines = ["| class | label cells kept by nearest shrinking (%) | coarse-fraction map IoU at 0.50 (%) |",
                 "|---|---:|---:|"]
        lines += [f"| {c} | {100 * v['kept_by_nearest']:.1f} | {100 * v['coarse_fraction_iou']:.1f} |" for c, v in oracle.items()]
        write_text_atomic(out / "grid_oracle.md", "\n".join(lines) + "\n")
        print("\n".join(lines))
    results: list[RunResult] = []
    for seed in seeds:  # seed-major: the first seed of every run comes first
        for spec in specs:
            run_dir = out / "runs" / spec.name / f"seed{seed}"
            results.append(train_run(spec, seed, recipe, out / "world", run_dir))
            results += [rescore_run(r, spec, seed, recipe, out / "world", run_dir) for r in rescores if r.run == spec.name]
            summary = summarize(rows, results)
            write_text_atomic(out / f"{args.summary}.json", json.dumps(
                {"recipe": asdict(recipe), "command": "bev-ddp " + " ".join(sys.argv[1:]),
                 "runs": summary, "results": [asdict(r) for r in results]}, indent=2))
            write_text_atomic(out / f"{args.summary}.md", markdown_summary(summary, recipe))
    print(markdown_summary(summarize(rows, results), recipe))
    return 0
