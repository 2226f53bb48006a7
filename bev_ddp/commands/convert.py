"""``bev-ddp convert SRC OUT --from {bevfusion,ddp,swin} [--config CONFIG]``: published weights → bev_ddp.

Prints how many source tensors were mapped (renamed), transformed (layout changed) and dropped
(no learned state), naming the transformed and dropped ones.  Exit 2 naming the keys when a
source tensor maps onto nothing (see ``bev_ddp/convert/README.md``).
"""
from __future__ import annotations

import argparse

from bev_ddp.engine.cli_support import run_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="the published checkpoint (.pth)")
    parser.add_argument("out", help="where to write the bev_ddp checkpoint")
    parser.add_argument("--from", dest="source", required=True, choices=["bevfusion", "ddp", "swin"],
                        help="whose checkpoint SRC is")
    parser.add_argument("--config", help="BEV config to convert for and load strictly (default: the matching "
                                         "configs/bev/reference/ config)")


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        from bev_ddp.convert import convert_checkpoint

        result = convert_checkpoint(args.src, args.out, source=args.source, config=args.config)
        print(f"config: {result.config}" if result.config else "config: (backbone only)")
        print(f"mapped: {len(result.mapped)}  transformed: {len(result.transformed)}  dropped: {len(result.dropped)}")
        for line in result.transformed:
            print(f"  transformed {line}")
        for key in result.dropped:
            print(f"  dropped {key}")
        print(f"wrote {result.out}")
        return 0

    return run_command("bev-ddp convert", body)
