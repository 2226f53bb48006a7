"""``bev-ddp info CONFIG [key=value ...] [--depth N] [--json]``: parameter counts per model part.

Works for every task: the model is built with ``get_task(cfg.task).build_model(cfg)`` (random
weights, nothing is downloaded) and its module tree is summarised down to ``--depth`` levels.
Counting needs no weights, so the weight files a config names (pretrained backbone, whole model)
are not read: a reference config is counted before its checkpoints are downloaded.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

from torch import nn

from bev_ddp.engine.cli_support import add_override_arguments, load_task_config, run_command
from bev_ddp.engine.pretrained import without_weight_files


@dataclass
class PartCount:
    """Parameters of one sub-module: ``name`` is its dotted path, ``depth`` its level (1 = child)."""

    name: str
    depth: int
    params: int
    trainable: int


def count_parameters(model: nn.Module, max_depth: int = 2) -> list[PartCount]:
    """Parameter counts of every sub-module down to ``max_depth`` levels, in module order.

    Parts without parameters are left out; a parameter shared by two parts is counted in both.
    """
    rows: list[PartCount] = []

    def visit(module: nn.Module, prefix: str, depth: int) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            params = list(child.parameters())
            total = sum(p.numel() for p in params)
            if total == 0:
                continue
            rows.append(PartCount(path, depth, total, sum(p.numel() for p in params if p.requires_grad)))
            if depth < max_depth:
                visit(child, path + ".", depth + 1)

    visit(model, "", 1)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config with a 'task:' key (bev, seg or depth)")
    parser.add_argument("--depth", type=int, default=2, help="levels of the module tree to list")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_override_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        from bev_ddp.errors import InputError

        if args.depth < 1:
            raise InputError(f"--depth must be >= 1, got {args.depth}")
        cfg, task = load_task_config(args.config, args.overrides)
        model = task.build_model(without_weight_files(cfg))  # counting needs no weights
        rows = count_parameters(model, args.depth)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if args.json:
            print(json.dumps({"config": args.config, "model": type(model).__name__, "total": total,
                              "trainable": trainable, "parts": [asdict(r) for r in rows]}, indent=2))
            return 0
        _print_table(args.config, type(model).__name__, rows, total, trainable)
        return 0

    return run_command("bev-ddp info", body)


def _print_table(config: str, model_name: str, rows: list[PartCount], total: int, trainable: int) -> None:
    from rich.table import Table

    from bev_ddp.report.console import Console

    table = Table(title=f"{model_name} parameters ({config})")
    table.add_column("part")
    table.add_column("params", justify="right")
    table.add_column("share", justify="right")
    table.add_column("trainable", justify="right")
    for row in rows:
        table.add_row("  " * (row.depth - 1) + row.name, f"{row.params:,}", f"{100 * row.params / max(total, 1):.1f}%",
                      f"{row.trainable:,}")
    table.add_row("total", f"{total:,}", "100.0%", f"{trainable:,}", style="bold")
    Console().print(table)
