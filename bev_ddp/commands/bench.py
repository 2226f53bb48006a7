"""``bev-ddp bench {ops,model,all} [suite options]``: benchmarks printing ratios measured in one run.

* ``ops``: compiled bev_pool / ms_deform_attn kernels against their pure-PyTorch references at
  BEVFusion's sizes (:mod:`bev_ddp.bench.ops`);
* ``model``: BEV model latency and memory, DDP sampling steps against the baseline head
  (:mod:`bev_ddp.bench.model`);
* ``frontier``: DDP quality / latency / uncertainty over steps x noise draws x noise grid
  (:mod:`bev_ddp.bench.frontier`);
* ``deploy``: latency of eager PyTorch, ``torch.compile`` and onnxruntime on one model, with
  their parity (:mod:`bev_ddp.bench.deploy`);
* ``gpu-check``: the whole GPU proof in one command (build, CUDA tests, both benches on CUDA,
  AMP training, sync-free sampling, two processes; :mod:`bev_ddp.bench.gpu_check`, ``make gpu-check``);
* ``all``: the ``ops`` and ``model`` suites with their default options.

A suite's module is imported, and its options parsed, only when that suite runs
(``bev-ddp bench ops --help`` lists the options of ``ops``).
"""
from __future__ import annotations

import argparse

from bev_ddp.bench import ALL, SUITES, run_suite
from bev_ddp.engine.cli_support import run_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=[*SUITES, "all"], help="which benchmark to run")
    parser.add_argument("suite_args", nargs=argparse.REMAINDER, help="options of the suite (see SUITE --help)")


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        if args.suite != "all":
            return run_suite(args.suite, list(args.suite_args))
        if args.suite_args:
            raise SystemExit("bev-ddp bench all takes no options (run the suites one by one to pass options)")
        codes = [run_suite(name, []) for name in ALL]
        return max(codes)

    return run_command("bev-ddp bench", body)
