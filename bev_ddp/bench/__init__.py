"""Benchmarks run by ``bev-ddp bench`` (each suite module exposes ``add_arguments`` and ``run``).

:func:`run_suite` parses a suite's own options and runs it; the ``bench`` command and the GPU
check both call it.  A suite's module is imported only when that suite runs.
"""
from __future__ import annotations

import argparse
import importlib

from bev_ddp.engine.cli_support import HelpFormatter, parse_command_line

SUITES = {"ops": "bev_ddp.bench.ops", "model": "bev_ddp.bench.model", "frontier": "bev_ddp.bench.frontier",
          "gpu-check": "bev_ddp.bench.gpu_check", "deploy": "bev_ddp.bench.deploy",
          "learnability": "bev_ddp.bench.learnability"}
ALL = ("ops", "model")  # gpu-check builds and tests too, frontier needs checkpoints, learnability trains:
# not run with the others


def run_suite(name: str, argv: list[str]) -> int:
    """Parse ``argv`` with the suite's own options and run it."""
    module = importlib.import_module(SUITES[name])
    parser = argparse.ArgumentParser(prog=f"bev-ddp bench {name}", description=module.__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    module.add_arguments(parser)
    return int(module.run(parse_command_line(parser, argv)) or 0)
