"""The ``bev-ddp`` console command.

Each subcommand lives in its own module under :mod:`bev_ddp.commands` and exposes
``add_arguments(parser)`` and ``run(args) -> int``.  Modules are imported only when their
subcommand runs, so ``bev-ddp --help`` stays fast and a heavy dependency of one command never
breaks another.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable

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
    "export": (
        "bev_ddp.commands.export",
        "export a BEV model to ONNX (camera stage; fuser + decoder + head with the DDP steps "
        "unrolled) with export.json; onnxruntime runs it (eval/replay --backend onnxruntime)",
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
    from bev_ddp.engine.cli_support import (HelpFormatter, add_verbosity_arguments, parse_command_line, set_verbosity,
                                            warnings_follow_verbosity)

    sub = argparse.ArgumentParser(prog=f"bev-ddp {name}", description=summary, formatter_class=HelpFormatter)
    module.add_arguments(sub)
    add_verbosity_arguments(sub)
    args = parse_command_line(sub, argv[1:])  # key=value overrides in any position
    set_verbosity(args.verbose, args.quiet)
    with warnings_follow_verbosity():  # -qq hides Python warnings too
        return run_guarded(f"bev-ddp {name}", lambda: module.run(args))


def run_guarded(prog: str, body: Callable[[], int | None]) -> int:
    """The one error boundary: expected failures end with one line on stderr and an exit code.

    2: bad input or an unusable output path (:class:`InputError`); 130 / 143: SIGINT / SIGTERM
    (also a second Ctrl-C); 141: stdout closed early (``| head``); 1: an output write failed
    (e.g. a full disk).  Anything else is a bug and keeps its traceback.
    """
    from bev_ddp.engine.interrupt import interruptible
    from bev_ddp.stop import StopRequested

    try:
        with interruptible():
            return int(body() or 0)
    except InputError as exc:  # the user's input is at fault: say which, without a traceback
        _say(f"{prog}: error: {exc}")
        return 2
    except StopRequested as exc:  # Interrupted (a signal where the program was) or a loop stopped early
        _say(f"{prog}: interrupted by {exc}; outputs are complete or absent")
        return exc.exit_code
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted; outputs are complete or absent")
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (``bev-ddp eval ... | head -1``): stop writing to it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        _say(f"{prog}: stdout was closed early (broken pipe)")
        return 141
    except OSError as exc:  # an output that failed while written (full disk, disk removed, ...)
        where = f": {exc.filename}" if exc.filename else ""
        _say(f"{prog}: error: {exc.strerror or exc}{where} (files are complete or absent)")
        return 1


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # stderr itself is gone
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
