"""``bev-ddp export CONFIG CKPT --out DIR [--steps S] [--opset N] [--cams N] [key=value ...]``: ONNX graphs.

Writes ``camera.onnx`` (images + calibration -> camera BEV), one ``map_s{S}.onnx`` per step count
(fuser + decoder + DDP head, the S steps unrolled, the start map an input; ``map.onnx`` for the
baseline head) and ``export.json`` (shapes, opset, steps, fingerprints).  The LiDAR stage stays in
PyTorch.  Every graph passes ``onnx.checker``.  See ``docs/deploy.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bev_ddp.engine.cli_support import add_override_arguments, load_task_config, run_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="BEV model config (YAML, task: bev)")
    parser.add_argument("checkpoint", help="training checkpoint (.pth) or bare model state dict")
    parser.add_argument("--out", required=True, help="export folder (created; its graphs are replaced)")
    parser.add_argument("--steps", default=None,
                        help="DDP step counts to export, e.g. 1,2 (default: the config's eval.steps)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18; at least 16)")
    parser.add_argument("--cams", type=int, default=6, help="cameras per sample of the camera graph (default: %(default)s)")
    add_override_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        import torch

        from bev_ddp.deploy.export import DEFAULT_OPSET, export_bev_model
        from bev_ddp.engine.checkpoint import load_model_weights
        from bev_ddp.engine.evaluation import parse_steps
        from bev_ddp.errors import InputError
        from bev_ddp.output_files import probe_output_dir, remove_stale_tmp

        cfg, task = load_task_config(args.config, args.overrides)
        if cfg.task != "bev":
            raise InputError(f"config {args.config} is for task {cfg.task!r}; export handles BEV models (task: bev)")
        try:
            steps = parse_steps(args.steps if args.steps else list(cfg.eval.steps))
        except ValueError as exc:
            raise InputError(f"--steps: {exc}") from exc
        if args.cams < 1:
            raise InputError(f"--cams must be >= 1, got {args.cams}")
        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise InputError(f"checkpoint not found: {ckpt}")
        out = Path(args.out)
        probe_output_dir(out, what="export folder")  # a blocked folder fails now, not after the tracing
        remove_stale_tmp(out)
        model = task.build_model(cfg)
        load_model_weights(model, ckpt)
        with torch.no_grad():
            result = export_bev_model(model.eval(), cfg, out, steps=steps, opset=args.opset or DEFAULT_OPSET,
                                      num_cams=args.cams, checkpoint=ckpt, config_path=args.config)
        for path in result.files:
            print(path)
        print(f"exported {len(result.files) - 1} graphs in {result.seconds:.1f} s to {out} "
              f"(config {result.manifest['config_fingerprint']}, checkpoint {result.manifest['checkpoint_fingerprint']})")
        return 0

    return run_command("bev-ddp export", body)
