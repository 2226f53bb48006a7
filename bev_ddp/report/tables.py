"""Tables of an evaluation's metrics: rich console table, CSV and markdown.

Every function reads the metrics dict described in :mod:`bev_ddp.report.writer`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich.table import Table

from bev_ddp.report.console import Console


def step_keys(metrics: dict[str, Any]) -> list[str]:
    """Step counts present in ``metrics`` (JSON keys are strings), in increasing order."""
    return sorted(metrics.get("steps", {}), key=lambda s: int(s))


def class_names(metrics: dict[str, Any]) -> list[str]:
    names = list(metrics.get("classes") or [])
    if not names:
        for entry in metrics.get("steps", {}).values():
            names = list(entry.get("per_class", {}))
            if names:
                break
    return names


def summary_names(metrics: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for s in step_keys(metrics):
        for name in metrics["steps"][s].get("summary", {}):
            if name not in names:
                names.append(name)
    return names


FIXED_KEY = "per_class@0.50"  # per-class IoU at the fixed threshold (BEV), shown next to the best-threshold figure


def has_fixed_threshold(metrics: dict[str, Any]) -> bool:
    """Whether the per-class figures come at threshold 0.50 as well as at the best threshold (BEV)."""
    return any(FIXED_KEY in metrics["steps"][s] for s in step_keys(metrics))


def _class_cell(metrics: dict[str, Any], step: str, name: str) -> str:
    """``per_class`` (%); for BEV ``"<at 0.50> / <at the best threshold>"``, so a class lost at the
    threshold a deployment uses cannot hide behind its best-threshold figure."""
    entry = metrics["steps"][step]
    best = _fmt(entry.get("per_class", {}).get(name))
    return f"{_fmt(entry[FIXED_KEY].get(name))} / {best}" if FIXED_KEY in entry else best


def _class_title(metrics: dict[str, Any]) -> str:
    metric = metrics.get("metric", "score")
    return f"{metric} at 0.50 / at the best threshold (%)" if has_fixed_threshold(metrics) else f"{metric} (%)"


def display_scale(metrics: dict[str, Any], name: str) -> float:
    """Factor a value is shown with: 100 (percent) unless ``metrics["display_scale"][name]`` says otherwise."""
    return float(metrics.get("display_scale", {}).get(name, 100.0))


def _fmt(value: Any, scale: float = 100.0) -> str:
    if value is None:
        return "-"
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value * scale:.1f}" if scale == 100.0 else f"{value * scale:.4g}"


def console_table(metrics: dict[str, Any], *, title: str | None = None) -> Table:
    """Per-class metric (%) by step count, then the summary metrics (% unless ``display_scale`` says otherwise)."""
    steps = step_keys(metrics)
    table = Table(title=title or f"per-class {_class_title(metrics)} on {metrics.get('num_samples', '?')} samples")
    table.add_column("class")
    for s in steps:
        table.add_column(f"{s} step{'s' if s != '1' else ''}", justify="right")
    for name in class_names(metrics):
        table.add_row(name, *(_class_cell(metrics, s, name) for s in steps))
    names = summary_names(metrics)
    for name in names:
        scale = display_scale(metrics, name)
        table.add_row(f"[bold]{name}[/bold]", *(_fmt(metrics["steps"][s].get("summary", {}).get(name), scale) for s in steps))
    if any("uncertainty" in metrics["steps"][s] for s in steps):
        table.add_row(
            "uncertainty AUROC",
            *(_fmt(metrics["steps"][s].get("uncertainty", {}).get("auroc")) for s in steps),
        )
    return table


def print_console(metrics: dict[str, Any], *, title: str | None = None, console: Console | None = None) -> None:
    (console or Console()).print(console_table(metrics, title=title))


def write_csv(metrics: dict[str, Any], path: Path) -> Path:
    """``class, steps_1, steps_3, ...`` rows of the per-class metric (fractions, not %); for BEV then
    ``steps_1@0.50, ...``: the per-class IoU at threshold 0.50 (the summary rows leave them empty)."""
    steps = step_keys(metrics)
    fixed = steps if has_fixed_threshold(metrics) else []
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", *(f"steps_{s}" for s in steps), *(f"steps_{s}@0.50" for s in fixed)])
        for name in class_names(metrics):
            writer.writerow([name, *(_csv_value(metrics["steps"][s].get("per_class", {}).get(name)) for s in steps),
                             *(_csv_value(metrics["steps"][s].get(FIXED_KEY, {}).get(name)) for s in fixed)])
        for name in summary_names(metrics):
            writer.writerow([name, *(_csv_value(metrics["steps"][s].get("summary", {}).get(name)) for s in steps),
                             *("" for _ in fixed)])
    return path


def _csv_value(value: Any) -> str:
    return "" if value is None else f"{value:.6f}"


def markdown_tables(metrics: dict[str, Any]) -> str:
    """Markdown: summary table, per-class table (%), uncertainty table."""
    steps = step_keys(metrics)
    header = "| | " + " | ".join(f"{s} step{'s' if s != '1' else ''}" for s in steps) + " |"
    rule = "|---|" + "---:|" * len(steps)
    lines = ["### Summary", "", header, rule]
    for name in summary_names(metrics):
        scale = display_scale(metrics, name)
        cells = " | ".join(_fmt(metrics["steps"][s].get("summary", {}).get(name), scale) for s in steps)
        lines.append(f"| {name}{' (%)' if scale == 100.0 else ''} | {cells} |")
    classes = class_names(metrics)
    if classes:
        lines += ["", f"### Per-class {_class_title(metrics)}", "", header.replace("| |", "| class |", 1), rule]
        for name in classes:
            lines.append(f"| {name} | " + " | ".join(_class_cell(metrics, s, name) for s in steps) + " |")
    if any("uncertainty" in metrics["steps"][s] for s in steps):
        lines += ["", "### Uncertainty vs error", "", header, rule]
        for key, label in (("auroc", "AUROC (uncertainty predicts error, %)"), ("overall_error_rate", "pixel error rate (%)")):
            lines.append(
                f"| {label} | "
                + " | ".join(_fmt(metrics["steps"][s].get("uncertainty", {}).get(key)) for s in steps)
                + " |"
            )
    return "\n".join(lines) + "\n"
