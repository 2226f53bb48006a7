"""``bev-ddp bench {ops,model,all} [suite options]``: benchmarks printing ratios measured in one run.

* ``ops``: compiled bev_pool / ms_deform_attn kernels against their pure-PyTorch references at
  BEVFusion's sizes (:mod:`bev_ddp.bench.ops`);
* ``model``: BEV model latency and memory, DDP sampling steps against the baseline head
  (:mod:`bev_ddp.bench.model`);
* ``gpu-check``: the whole GPU proof in one command (build, CUDA tests, both benches on CUDA,
  AMP training, sync-free sampling, two processes; :mod:`bev_ddp.bench.gpu_check`, ``make gpu-check``);
* ``all``: the ``ops`` and ``model`` suites with their default options.

A suite's module is imported, and its options parsed, only when that suite runs
(``bev-ddp bench ops --help`` lists the options of ``ops``).
"""
from __future__ import annotations

import argparse
import importlib

from bev_ddp.engine.cli_support import HelpFormatter, parse_command_line, run_command

SUITES = {"ops": "bev_ddp.bench.ops", "model": "bev_ddp.bench.model", "gpu-check": "bev_ddp.bench.gpu_check"}
ALL = ("ops", "model")  # gpu-check builds and tests too: not a benchmark to run with the others


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=[*SUITES, "all"], help="which benchmark to run")
    parser.add_argument("suite_args", nargs=argparse.REMAINDER, help="options of the suite (see SUITE --help)")


def run_suite(name: str, argv: list[str]) -> int:
    """Parse ``argv`` with the suite's own options and run it."""
    module = importlib.import_module(SUITES[name])
    parser = argparse.ArgumentParser(prog=f"bev-ddp bench {name}", description=module.__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    module.add_arguments(parser)
    return int(module.run(parse_command_line(parser, argv)) or 0)


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        if args.suite != "all":
            return run_suite(args.suite, list(args.suite_args))
        if args.suite_args:
            raise SystemExit("bev-ddp bench all takes no options (run the suites one by one to pass options)")
        codes = [run_suite(name, []) for name in ALL]
        return max(codes)

    return run_command("bev-ddp bench", body)
