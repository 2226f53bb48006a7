"""The ``bev-ddp`` console command.

Each subcommand lives in its own module under :mod:`bev_ddp.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``.  Modules are imported only when their
subcommand runs, so ``bev-ddp --help`` stays fast and a heavy dependency of one command never
breaks another.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from bev_ddp.errors import InputError

# name -> (module, one-line summary, longer help shown by `bev-ddp --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": (
        "bev_ddp.commands.synth",
        "write a procedurally generated town in nuScenes format (tables, map expansion, "
        "rendered camera images, ray-cast LiDAR)",
    ),
    "prepare": (
        "bev_ddp.commands.prepare",
        "build info files (per keyframe: LiDAR + sweeps, 6 cameras, poses, map) from a nuScenes "
        "dataroot with nuscenes-devkit",
    ),
    "train": (
        "bev_ddp.commands.train",
        "train a model from a YAML config (BEV map segmentation, image segmentation or depth); "
        "key=value overrides, --resume, torchrun for several processes",
    ),
    "eval": (
        "bev_ddp.commands.evaluate",
        "evaluate a checkpoint for several sampling step counts in one pass and write the "
        "per-class IoU report (console, JSON, CSV, markdown, PNG plots)",
    ),
    "replay": (
        "bev_ddp.commands.replay",
        "replay a recorded drive (nuScenes scene, ROS 2 bag or MCAP) through a model and write "
        "an MCAP of BEV maps, uncertainty and latency",
    ),
    "report": (
        "bev_ddp.commands.report",
        "re-render the report (tables and plots) from an evaluation's metrics JSON",
    ),
    "bench": (
        "bev_ddp.commands.bench",
        "benchmarks: compiled ops vs references, DDP steps vs baseline head latency and memory",
    ),
    "demo": (
        "bev_ddp.commands.demo",
        "the main job end to end on this machine: synthesize a small town, train the tiny fusion "
        "model, evaluate at steps 1 and 3, write the report",
    ),
    "info": (
        "bev_ddp.commands.info",
        "build a model from a config and print its parameter counts per part",
    ),
    "convert": (
        "bev_ddp.commands.convert",
        "convert a published BEVFusion, DDP or Swin-T checkpoint into a bev_ddp checkpoint",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bev-ddp",
        description="BEVFusion with a diffusion map decoder (DDP). Run `bev-ddp COMMAND --help` "
        "for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        # options are added lazily in main() for the command actually run
        sub.add_parser(name, help=summary, description=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    from bev_ddp.engine.cli_support import HelpFormatter, add_verbosity_arguments, parse_command_line, set_verbosity

    sub = argparse.ArgumentParser(prog=f"bev-ddp {name}", description=summary, formatter_class=HelpFormatter)
    module.add_arguments(sub)
    add_verbosity_arguments(sub)
    args = parse_command_line(sub, argv[1:])  # key=value overrides in any position
    set_verbosity(args.verbose, args.quiet)
    try:
        return int(module.run(args) or 0)
    except InputError as exc:  # the user's input is at fault: say which, without a traceback
        print(f"bev-ddp {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
