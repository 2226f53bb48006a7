"""``bev-ddp demo [--out D] [--quick]``: synthetic town → train the tiny fusion model → evaluate → report."""
from __future__ import annotations

import argparse
from pathlib import Path

from bev_ddp.engine.cli_support import add_override_arguments, run_command, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bev_ddp.engine.demo import DEFAULT_CONFIG, DemoSettings

    d = DemoSettings()
    parser.add_argument("--out", default=str(d.out_dir), help=f"output folder (default {d.out_dir})")
    parser.add_argument("--quick", action="store_true", help="a smaller town and a short training (about a minute)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="BEV config to train (default: tiny fusion DDP)")
    parser.add_argument("--scenes", type=int, help=f"scenes in the town (default {d.scenes}; a quarter held out)")
    parser.add_argument("--samples-per-scene", type=int, help=f"keyframes per scene (default {d.samples_per_scene})")
    parser.add_argument("--iters", type=int, help=f"training iterations (default {d.iters})")
    parser.add_argument("--self-aligned-iters", type=int, help=f"of which self-aligned (default {d.self_aligned_iters})")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the town, the training and the sampling")
    parser.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    add_override_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        from bev_ddp.engine.demo import DemoSettings, headline, run_demo

        setup_logging()
        base = DemoSettings.quick(Path(args.out)) if args.quick else DemoSettings(out_dir=Path(args.out))
        for name in ("scenes", "samples_per_scene", "iters", "self_aligned_iters"):
            value = getattr(args, name)
            if value is not None:
                setattr(base, name, value)
        base.seed, base.config, base.overrides = args.seed, Path(args.config), list(args.overrides)
        demo = run_demo(base, progress=not args.no_progress)
        print(headline(demo))
        return 0

    return run_command("bev-ddp demo", body)
