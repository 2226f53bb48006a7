"""``bev-ddp report METRICS_JSON [--out D]``: redraw tables and plots from an evaluation's JSON."""
from __future__ import annotations

import argparse
from pathlib import Path

from bev_ddp.engine.cli_support import run_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metrics_json", help="metrics.json written by `bev-ddp eval` (visuals.npz beside it is used)")
    parser.add_argument("--out", help="report folder (default: the JSON's folder)")


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        from bev_ddp.report import report_from_json

        out = Path(args.out) if args.out else Path(args.metrics_json).parent
        files = report_from_json(args.metrics_json, out, console=not args.quiet)  # -q: no table on the console
        print(f"wrote {len(files)} files to {out}")
        return 0

    return run_command("bev-ddp report", body)
