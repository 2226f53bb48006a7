"""``bev-ddp train CONFIG [key=value ...] [--work-dir D] [--resume CKPT]``.

Several processes: ``torchrun --nproc_per_node N -m bev_ddp.cli train CONFIG ...``.
"""
from __future__ import annotations

import argparse
import sys

from bev_ddp.engine.cli_support import add_override_arguments, load_task_config, run_command, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config with a 'task:' key (bev, seg or depth)")
    parser.add_argument("--work-dir", help="logs, checkpoints and reports (default: the config's train.work_dir)")
    parser.add_argument("--resume", metavar="CKPT", help="checkpoint file, or a work dir (its latest.pth), to continue from")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after the last step")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to log.jsonl)")
    add_override_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        from bev_ddp.engine.distributed import init_from_env
        from bev_ddp.engine.interrupt import signal_name
        from bev_ddp.engine.trainer import train

        info = init_from_env()
        setup_logging(main_process=info.is_main)
        cfg, task = load_task_config(args.config, args.overrides)
        work_dir = args.work_dir or cfg.train.work_dir
        result = train(cfg, task=task, work_dir=work_dir, resume=args.resume, final_eval=not args.no_eval,
                       progress=not args.no_progress)
        if info.is_main:
            print(f"{result.status} at step {result.step}; checkpoint {result.checkpoint}")
            for step, ev in sorted(result.evals.items()):
                print(f"evaluation at step {step}: " + _headline(ev.metrics))
            if result.signum is not None:
                print(f"bev-ddp train: interrupted by {signal_name(result.signum)} at step {result.step}; "
                      f"continue with --resume {result.checkpoint}", file=sys.stderr)
        return result.exit_code

    return run_command("bev-ddp train", body)


def _headline(metrics: dict) -> str:
    parts = []
    for steps, entry in sorted(metrics.get("steps", {}).items(), key=lambda kv: int(kv[0])):
        summary = entry.get("summary", {})
        if summary:
            name, value = next(iter(summary.items()))
            parts.append(f"{name} {value * 100:.1f} ({steps} step{'s' if steps != '1' else ''})")
    return ", ".join(parts)
