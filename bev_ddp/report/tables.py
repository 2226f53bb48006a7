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
    metric = metrics.get("metric", "score")
    steps = step_keys(metrics)
    table = Table(title=title or f"per-class {metric} (%) on {metrics.get('num_samples', '?')} samples")
    table.add_column("class")
    for s in steps:
        table.add_column(f"{s} step{'s' if s != '1' else ''}", justify="right")
    for name in class_names(metrics):
        table.add_row(name, *(_fmt(metrics["steps"][s].get("per_class", {}).get(name)) for s in steps))
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
    """``class, steps_1, steps_3, ...`` rows of the per-class metric (fractions, not %)."""
    steps = step_keys(metrics)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", *(f"steps_{s}" for s in steps)])
        for name in class_names(metrics):
            writer.writerow([name, *(_csv_value(metrics["steps"][s].get("per_class", {}).get(name)) for s in steps)])
        for name in summary_names(metrics):
            writer.writerow([name, *(_csv_value(metrics["steps"][s].get("summary", {}).get(name)) for s in steps)])
    return path


def _csv_value(value: Any) -> str:
    return "" if value is None else f"{value:.6f}"


def markdown_tables(metrics: dict[str, Any]) -> str:
    """Markdown: summary table, per-class table (%), uncertainty table."""
    metric = metrics.get("metric", "score")
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
        lines += ["", f"### Per-class {metric} (%)", "", header.replace("| |", "| class |", 1), rule]
        for name in classes:
            lines.append(
                f"| {name} | " + " | ".join(_fmt(metrics["steps"][s].get("per_class", {}).get(name)) for s in steps) + " |"
            )
    if any("uncertainty" in metrics["steps"][s] for s in steps):
        lines += ["", "### Uncertainty vs error", "", header, rule]
        for key, label in (("auroc", "AUROC (uncertainty predicts error, %)"), ("overall_error_rate", "pixel error rate (%)")):
            lines.append(
                f"| {label} | "
                + " | ".join(_fmt(metrics["steps"][s].get("uncertainty", {}).get(key)) for s in steps)
                + " |"
            )
    return "\n".join(lines) + "\n"
