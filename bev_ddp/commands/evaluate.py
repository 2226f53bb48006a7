"""``bev-ddp eval [CONFIG] CKPT [--steps 1,3,5] [--out D] [--max-samples N] [--backend {torch,onnxruntime} --onnx DIR]
[key=value ...]``.

CKPT is a training checkpoint or a run folder (its ``latest.pth``); it carries its config, so CONFIG
is needed only for bare state dicts and converted weights (``bev_ddp.engine.pretrained``).
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bev_ddp.engine.cli_support import add_override_arguments, run_command, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_or_checkpoint", metavar="CONFIG|CHECKPOINT",
                        help="a training checkpoint (.pth) or run folder, which carries its config; or the YAML "
                        "config, then the checkpoint (needed for a bare state dict or converted weights)")
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="after a config: a training checkpoint, run folder (its latest.pth) or bare state dict")
    parser.add_argument("--steps", default=None, help="sampling step counts, e.g. 1,3,5 (default: the config's "
                        "eval.steps, else the model's model.head.ddp.steps / model.ddp.steps)")
    parser.add_argument("--out", help="report folder (default: eval_<checkpoint name> beside the checkpoint)")
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples of the split")
    parser.add_argument("--split", default=None, help="dataset split (default: the config's eval.split)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="runtime of the BEV model (default: %(default)s); onnxruntime reads --onnx")
    parser.add_argument("--onnx", default=None, help="export folder of `bev-ddp export` (with --backend onnxruntime)")
    add_override_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        from bev_ddp.engine.distributed import init_from_env
        from bev_ddp.engine.evaluation import evaluate_task, parse_steps
        from bev_ddp.engine.interrupt import StopRequest, signal_name
        from bev_ddp.engine.pretrained import (build_pretrained, checkpoint_file, resolve_model_source,
                                               split_config_and_checkpoint)
        from bev_ddp.errors import InputError
        from bev_ddp.output_files import probe_output_dir, remove_stale_tmp

        info = init_from_env()
        setup_logging(main_process=info.is_main)
        config, ckpt = split_config_and_checkpoint([p for p in (args.config_or_checkpoint, args.checkpoint) if p])
        if ckpt is None:
            raise InputError(f"bev-ddp eval needs a checkpoint (or run folder), got only the config {config}")
        if args.max_samples is not None and args.max_samples < 1:
            raise InputError(f"--max-samples must be >= 1, got {args.max_samples}")
        try:
            steps = parse_steps(args.steps) if args.steps else None  # None: evaluation_steps(cfg, model)
        except InputError as exc:
            raise InputError(f"--steps: {exc}") from exc
        ckpt = checkpoint_file(ckpt)
        out = Path(args.out) if args.out else ckpt.parent / f"eval_{ckpt.stem}"
        if info.is_main:  # a blocked, read-only or full report folder fails now, not after the evaluation
            probe_output_dir(out, what="report folder")
            remove_stale_tmp(out)
        source = resolve_model_source(config, ckpt, args.overrides)
        cfg, task = source.cfg, source.task
        if args.split:
            cfg.eval.split = args.split
        model = build_pretrained(source, device=info.device)
        if args.backend != "torch" or args.onnx is not None:
            from bev_ddp.deploy.onnx_backend import backend_model

            model = backend_model(model, args.backend, args.onnx, cfg=cfg, config=config, checkpoint=ckpt)
        with StopRequest() as stop:
            result = evaluate_task(cfg, task, model, steps=steps, device=info.device, out_dir=out,
                                   max_samples=args.max_samples, progress=not args.no_progress, stop=stop)
        if result.interrupted:
            if info.is_main:
                print(f"bev-ddp eval: interrupted by {signal_name(stop.signum or signal.SIGTERM)} after "
                      f"{result.batches} batches; no report written", file=sys.stderr)
            return 128 + (stop.signum or signal.SIGTERM)
        if info.is_main:
            print(f"evaluated {result.metrics.get('num_samples')} samples in {result.seconds:.1f} s; report in {out}")
        return 0

    return run_command("bev-ddp eval", body)
