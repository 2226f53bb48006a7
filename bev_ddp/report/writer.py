"""Write an evaluation report: console table, ``metrics.json``, CSV, markdown and PNG plots.

The metrics dict (what every task's evaluator returns, JSON-serialisable)::

    {
      "task": "bev",                       # free text, shown in the title
      "metric": "IoU",                     # name of the per-class metric
      "classes": ["drivable_area", ...],   # optional for tasks without classes
      "num_samples": 81,
      "degraded": {"samples_missing_cameras": 3, "missing_camera_images": 5},  # optional: a note in report.md
      "display_scale": {"RMSE": 1.0},      # optional; values are shown ×100 (%) unless listed
      "steps": {                           # one entry per sampling step count (string keys)
        "1": {
          "per_class": {"drivable_area": 0.81, ...},          # optional
          "summary": {"mIoU": 0.52, "mIoU@0.50": 0.50},       # headline scalars, first = headline
          "per_threshold": {"thresholds": [...], "per_class": {name: [...]}, "mean": [...]},  # optional
          "uncertainty": {"bin_edges": [...], "pixels": [...], "errors": [...],
                          "error_rate": [...], "auroc": 0.71, "overall_error_rate": 0.1},     # optional
        }, ...
      }
    }

Every file is written to a temporary name and renamed, so a full disk or a signal leaves the
previous complete file or none.  Files (any optional part missing in the metrics is skipped): ``metrics.json``,
``per_class_<metric>.csv``, ``report.md``, ``<metric>_vs_threshold.png``, ``metrics_vs_steps.png``,
``uncertainty_vs_error.png``, ``maps.png`` (from ``visuals``, or ``visuals.npz`` in ``out_dir``), and
``uncertainty_estimators.png`` / ``reliability.png`` from a step's ``uncertainty_estimators``
(:mod:`bev_ddp.report.uncertainty_plots`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.console import Console

from bev_ddp.errors import InputError
from bev_ddp.files import read_json
from bev_ddp.output_files import write_text_atomic, write_via_tmp
from bev_ddp.report import plots, tables, uncertainty_plots

VISUALS_FILE = "visuals.npz"


def load_visuals(path: Path) -> dict[str, np.ndarray]:
    """Arrays saved by the evaluation loop (empty when the file is absent)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"visuals file {path} could not be read: {exc}") from exc


def degraded_note(metrics: dict[str, Any]) -> str | None:
    """One sentence on the samples evaluated with missing inputs (``metrics["degraded"]``), or None."""
    degraded = metrics.get("degraded") or {}
    samples = int(degraded.get("samples_missing_cameras", 0))
    if not samples:
        return None
    return (f"{samples} of {metrics.get('num_samples', '?')} samples had missing or unreadable camera images "
            f"({int(degraded.get('missing_camera_images', 0))} images replaced by zeros); see the warnings of the run")


def write_report(
    metrics: dict[str, Any],
    out_dir: str | Path,
    *,
    title: str | None = None,
    visuals: dict[str, np.ndarray] | None = None,
    console: Console | bool | None = True,
) -> list[Path]:
    """Write every report file of ``metrics`` into ``out_dir``; returns the written paths.

    Args:
        metrics: see the module docstring.
        out_dir: created if missing.
        title: report title (default from ``task`` and ``metric``).
        visuals: sample maps for ``maps.png``; default: ``out_dir/visuals.npz`` if present.
        console: print the table (True), to a given rich console, or not at all (False/None).
    """
    if not isinstance(metrics, dict) or not isinstance(metrics.get("steps"), dict) or not metrics["steps"]:
        raise InputError("metrics must be a dict with a non-empty 'steps' mapping (step count -> metrics)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = str(metrics.get("metric", "score"))
    title = title or f"{metrics.get('task', 'evaluation')}: per-class {metric}"
    if console:
        tables.print_console(metrics, title=title, console=console if isinstance(console, Console) else None)
    written: list[Path] = []
    json_path = write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    written.append(json_path)
    if tables.class_names(metrics):
        written.append(write_via_tmp(out_dir / f"per_class_{metric.lower()}.csv", lambda p: tables.write_csv(metrics, p)))
    if visuals is None:
        visuals = load_visuals(out_dir / VISUALS_FILE)
    maps = visuals
    figures = [
        ("Per-class vs threshold", write_via_tmp(out_dir / f"{metric.lower()}_vs_threshold.png",
                                            lambda p: plots.plot_metric_vs_threshold(metrics, p))),
        ("Metrics vs sampling steps", write_via_tmp(out_dir / "metrics_vs_steps.png",
                                               lambda p: plots.plot_summary_vs_steps(metrics, p))),
        ("Uncertainty vs error", write_via_tmp(out_dir / "uncertainty_vs_error.png",
                                          lambda p: plots.plot_uncertainty_vs_error(metrics, p))),
        ("Predictions next to ground truth", write_via_tmp(out_dir / "maps.png", lambda p: plots.plot_maps(maps, p))),
        ("Error rate by uncertainty, per estimator", write_via_tmp(out_dir / "uncertainty_estimators.png",
                                                              lambda p: uncertainty_plots.plot_estimator_error_rates(metrics, p))),
        ("Reliability of the probabilities", write_via_tmp(out_dir / "reliability.png",
                                                      lambda p: uncertainty_plots.plot_reliability(metrics, p))),
    ]
    md = [f"# {title}", "", f"{metrics.get('num_samples', '?')} samples.", ""]
    note = degraded_note(metrics)
    if note:
        md += [f"**Degraded input:** {note}", ""]
        if console:
            (console if isinstance(console, Console) else Console(stderr=True)).print(f"degraded input: {note}")
    md.append(tables.markdown_tables(metrics))
    md.append(uncertainty_plots.markdown_estimators(metrics))
    for caption, path in figures:
        if path is not None:
            written.append(path)
            md += [f"### {caption}", "", f"![{caption}]({path.name})", ""]
    md_path = write_text_atomic(out_dir / "report.md", "\n".join(md))
    written.append(md_path)
    return written


def report_from_json(metrics_json: str | Path, out_dir: str | Path, *, console: bool = True) -> list[Path]:
    """Re-render a report from a ``metrics.json`` (visuals from a ``visuals.npz`` beside it)."""
    metrics_json = Path(metrics_json)
    metrics = read_json(metrics_json, what="metrics file")
    visuals = load_visuals(metrics_json.parent / VISUALS_FILE)
    return write_report(metrics, out_dir, visuals=visuals, console=console)
