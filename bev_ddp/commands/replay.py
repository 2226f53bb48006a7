"""``bev-ddp replay``: run a BEV model over a recorded drive and write Foxglove-ready outputs.

Examples::

    bev-ddp replay work_dirs/synth_tiny_fusion_ddp --dataroot data/synth --scene synth-0000 --steps 3 \\
        --out work_dirs/replay/synth-0000          # a run folder (its latest.pth) carries its config
    bev-ddp replay CKPT --bag drive.mcap --topics topics.yaml --latency-budget-ms 150 --png
    bev-ddp replay CONFIG CKPT --bag NuScenes-v1.0-mini-scene-0061.mcap model.head.ddp.depth=2
    bev-ddp replay CONFIG --scene synth-0000   # the config's model.checkpoint, else untrained weights
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_or_checkpoint", metavar="CONFIG|CHECKPOINT",
                        help="a training checkpoint or run folder, which carries its config; or the model config "
                        "(YAML, task: bev)")
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="after a config: training checkpoint or state dict (default: the config's "
                        "model.checkpoint)")
    src = parser.add_argument_group("input (one of)")
    src.add_argument("--bag", help="ROS 2 bag directory (sqlite3 or MCAP storage), .db3 or .mcap file")
    src.add_argument("--scene", help="nuScenes scene name or token (with --dataroot)")
    src.add_argument("--dataroot", help="nuScenes-format dataroot (default: the config's data.dataroot)")
    src.add_argument("--version", default="v1.0-mini", help="nuScenes table version (default: %(default)s)")
    src.add_argument("--topics", help="YAML topic map for --bag (default: the built-in map whose LiDAR topic the log has: "
                     "the ROS 2 conversions' /LIDAR_TOP names or foxglove/nuscenes2mcap's /lidar_top names)")
    parser.add_argument("--out", help="output folder (default: work_dirs/replay/<input name>)")
    parser.add_argument("--steps", type=int, default=None, help="DDP sampling steps per frame; the maximum "
                        "when --latency-budget-ms is set (default: the model's model.head.ddp.steps)")
    parser.add_argument("--latency-budget-ms", type=float, default=None,
                        help="pick the steps of each frame to stay under this latency (ms)")
    parser.add_argument("--tolerance-ms", type=float, default=50.0,
                        help="largest camera/LiDAR time offset accepted (default: %(default)s)")
    parser.add_argument("--sweeps", type=int, default=None,
                        help="LiDAR sweeps per frame incl. the current one (default: the config's data.load_sweeps)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of every frame (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 is fastest on a busy machine")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many LiDAR frames")
    parser.add_argument("--png", action="store_true", help="also write frames/<index>.png")
    parser.add_argument("--mp4", action="store_true", help="also write replay.mp4 (OpenCV)")
    parser.add_argument("--fps", type=float, default=10.0, help="MP4 frame rate (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="runtime of the model (default: %(default)s); onnxruntime reads --onnx")
    parser.add_argument("--onnx", default=None, help="export folder of `bev-ddp export` (with --backend onnxruntime)")
    from bev_ddp.engine.cli_support import add_override_arguments

    add_override_arguments(parser, "-o", "--override")  # -o K=V: the older spelling, kept as an alias


def run(args: argparse.Namespace) -> int:
    from bev_ddp.engine.pretrained import split_config_and_checkpoint
    from bev_ddp.replay.app import ReplayRequest, run_replay

    if bool(args.bag) == bool(args.scene):
        print("bev-ddp replay: error: give exactly one of --bag or --scene", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"bev-ddp replay: error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    config, checkpoint = split_config_and_checkpoint([p for p in (args.config_or_checkpoint, args.checkpoint) if p])
    request = ReplayRequest(
        config=config,
        checkpoint=checkpoint,
        overrides=list(args.overrides),
        bag=None if args.bag is None else Path(args.bag),
        scene=args.scene,
        dataroot=None if args.dataroot is None else Path(args.dataroot),
        version=args.version,
        topics=None if args.topics is None else Path(args.topics),
        out=None if args.out is None else Path(args.out),
        steps=args.steps,
        latency_budget_ms=args.latency_budget_ms,
        tolerance_ms=args.tolerance_ms,
        sweeps=args.sweeps,
        seed=args.seed,
        device=args.device,
        max_frames=args.max_frames,
        png=args.png,
        mp4=args.mp4,
        fps=args.fps,
        progress=not args.no_progress,
    )
    model = None
    if args.backend != "torch" or args.onnx is not None:
        model = _backend_model(request, args.backend, args.onnx)
    result = run_replay(request, model=model)
    print(
        f"replayed {result.frames} frames ({result.predicted} predicted, {result.skipped} skipped, "
        f"{result.degraded} degraded) at {result.frames_per_s:.2f} frames/s -> {result.out_dir}"
    )
    if result.output_error:
        print(f"bev-ddp replay: error: {result.output_error}; the outputs hold the {result.frames} frames written "
              "before it", file=sys.stderr)
        return 1
    if result.interrupted:
        signum = result.signum or signal.SIGINT
        print(f"bev-ddp replay: interrupted by {signal.Signals(signum).name}; the outputs hold every frame "
              "processed so far", file=sys.stderr)
        return 128 + signum
    if result.log_error:
        print(f"bev-ddp replay: error: {result.log_error}; the outputs hold every frame read before it",
              file=sys.stderr)
        return 1
    return 0


def _backend_model(request, backend: str, onnx_dir: str | None):
    """The request's model on ``backend`` (a fingerprint mismatch is an InputError: exit 2)."""
    from bev_ddp.bev.schema import BEVConfig
    from bev_ddp.config import load_config
    from bev_ddp.deploy.onnx_backend import backend_model
    from bev_ddp.replay.app import load_model

    cfg = load_config(request.config, request.overrides, schema=BEVConfig)
    model = load_model(cfg, request.checkpoint, request.device)
    checkpoint = request.checkpoint or cfg.model.get("checkpoint")
    return backend_model(model, backend, onnx_dir, cfg=cfg, config=request.config, checkpoint=checkpoint)
