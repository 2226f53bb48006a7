"""Wire a replay run from its settings: model, log source, frame assembly, outputs."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bev_ddp.data.sample_builder import SampleBuilder
from bev_ddp.engine.pretrained import ModelSource, build_pretrained, resolve_model_source
from bev_ddp.engine.task import default_steps
from bev_ddp.errors import InputError
from bev_ddp.output_files import probe_output_dir
from bev_ddp.replay.controller import StepController
from bev_ddp.replay.log_sources import open_log
from bev_ddp.replay.nuscenes_source import NuScenesSceneSource
from bev_ddp.replay.outputs import GridSpec, ReplayOutputs
from bev_ddp.replay.runner import FrameHook, ReplayResult, replay
from bev_ddp.replay.sync import FrameAssembler, SyncSettings
from bev_ddp.replay.topics import load_topic_map


@dataclass
class ReplayRequest:
    """Settings of one ``bev-ddp replay`` run (see ``bev-ddp replay --help``)."""

    config: Path | None = None  # None: the config the checkpoint carries
    checkpoint: Path | None = None  # training checkpoint, run folder or state dict
    overrides: list[str] = field(default_factory=list)
    bag: Path | None = None
    scene: str | None = None
    dataroot: Path | None = None
    version: str = "v1.0-mini"
    topics: Path | None = None
    out: Path | None = None
    steps: int | None = None  # None: the model's own (model.head.ddp.steps)
    latency_budget_ms: float | None = None
    tolerance_ms: float = 50.0
    sweeps: int | None = None
    seed: int = 0
    device: str = "cpu"
    max_frames: int | None = None
    png: bool = False
    mp4: bool = False
    fps: float = 10.0
    progress: bool = True


def load_model(source: ModelSource, device: str) -> torch.nn.Module:
    """Build the BEV model of ``source`` and load its weights (its checkpoint or ``model.checkpoint``)."""
    if source.checkpoint is None and not source.cfg.model.get("checkpoint"):
        warnings.warn("no checkpoint given: the replay runs a model with untrained weights", stacklevel=2)
    return build_pretrained(source, device=device)


def run_replay(request: ReplayRequest, *, model: torch.nn.Module | None = None,
               on_frame: FrameHook | None = None) -> ReplayResult:
    """Run one replay; ``model`` replaces the one the config and checkpoint describe."""
    if request.steps is not None and request.steps < 1:
        raise InputError(f"--steps must be ≥ 1, got {request.steps}")
    if request.tolerance_ms < 0:
        raise InputError(f"--tolerance-ms must be ≥ 0, got {request.tolerance_ms}")
    if request.latency_budget_ms is not None and not request.latency_budget_ms > 0:
        raise InputError(f"--latency-budget-ms must be > 0, got {request.latency_budget_ms}")
    if request.sweeps is not None and request.sweeps < 1:
        raise InputError(f"--sweeps must be ≥ 1, got {request.sweeps}")
    if request.max_frames is not None and request.max_frames < 1:
        raise InputError(f"--max-frames must be ≥ 1, got {request.max_frames}")
    model_source = resolve_model_source(request.config, request.checkpoint, request.overrides)
    cfg = model_source.cfg
    if cfg.task != "bev":
        raise InputError(f"config {request.config or model_source.checkpoint} is for task {cfg.task!r}; replay runs BEV "
                         "models (task: bev)")
    if request.bag is not None:
        source = open_log(request.bag, topics_file=request.topics)  # ROS 2 bag/MCAP or Foxglove MCAP
        topics = source.topics
        name = request.bag.stem
    elif request.scene is not None:
        topics = load_topic_map(request.topics)
        dataroot = request.dataroot or Path(cfg.data.dataroot)
        source = NuScenesSceneSource(dataroot, request.scene, version=request.version,
                                     base_frame=topics.base_frame, world_frame=topics.world_frame)
        name = source.scene["name"]
    else:
        raise InputError("replay needs a bag or a nuScenes scene")
    total = source.count_lidar_messages()  # also checks that the log opens, before the model is built
    out_dir = request.out or Path("work_dirs") / "replay" / name
    probe_output_dir(out_dir, what="replay output folder")  # a blocked, read-only or full folder fails now
    if model is None:
        model = load_model(model_source, request.device)
    sweeps = request.sweeps if request.sweeps is not None else int(cfg.data.load_sweeps)
    settings = SyncSettings(
        tolerance_ns=int(round(request.tolerance_ms * 1e6)),
        num_sweeps=sweeps,
        base_frame=topics.base_frame,
        world_frame=topics.world_frame,
        lidar_frame=topics.lidar_frame,
    )
    assembler = FrameAssembler(settings=settings, camera_frames={c.name: c.frame_id for c in topics.cameras})
    classes = list(cfg.data.classes)
    grid = GridSpec(xbound=tuple(cfg.data.xbound), ybound=tuple(cfg.data.ybound))
    max_steps = request.steps if request.steps is not None else default_steps(model)  # the model's default
    controller = StepController(max_steps=max_steps, budget_ms=request.latency_budget_ms)
    # closing(): the log's reader is closed when replay returns (early stop included), not by a
    # generator finaliser at some later garbage collection while another handle holds the bag
    with ReplayOutputs(out_dir, class_names=classes, grid=grid, png=request.png, mp4=request.mp4,
                       fps=request.fps) as outputs, contextlib.closing(source.events()) as events:
        return replay(
            events,
            assembler=assembler,
            build_sample=SampleBuilder.from_config(cfg),
            model=model,
            outputs=outputs,
            controller=controller,
            class_names=classes,
            seed=request.seed,
            device=request.device,
            max_frames=request.max_frames,
            total=total,
            progress=request.progress,
            on_frame=on_frame,
        )
