"""Figures and tables of uncertainty estimators, calibration and the step / draw / grid frontier.

Reads the ``uncertainty_estimators`` entry of a step count in the metrics dict
(:meth:`bev_ddp.metrics.uncertainty.MultiLabelUncertaintyScores.to_dict`) and the rows of
``bev-ddp bench frontier`` (:func:`bev_ddp.bench.frontier.frontier_rows`).  Each plot function
writes one PNG and returns its path, or ``None`` when there is nothing to draw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)
import numpy as np  # noqa: E402

from bev_ddp.report.tables import step_keys  # noqa: E402

DEFINITION_LABELS = {"class_cells": "per (class, cell)", "pixels": "per cell, any class wrong"}


def _estimator_steps(metrics: dict[str, Any]) -> list[str]:
    return [s for s in step_keys(metrics) if metrics["steps"][s].get("uncertainty_estimators", {}).get("estimators")]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _centres(edges: list[float]) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    return (e[:-1] + e[1:]) / 2


def plot_reliability(metrics: dict[str, Any], path: Path) -> Path | None:
    """Reliability diagram (observed positive rate vs mean predicted probability) per step count,
    ECE in the legend; every (class, cell) is one binary prediction."""
    steps = _estimator_steps(metrics)
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
    for s in steps:
        cal = metrics["steps"][s]["uncertainty_estimators"]["calibration"]
        x = [np.nan if v is None else v for v in cal["mean_probability"]]
        y = [np.nan if v is None else v for v in cal["positive_rate"]]
        ece = cal.get("ece")
        ax.plot(x, y, marker="o", ms=3, label=f"{s} step{'s' if s != '1' else ''}" +
                ("" if ece is None else f", ECE {ece:.3f}"))
    ax.set_xlabel("predicted probability (class k)")
    ax.set_ylabel("observed frequency of class k")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("reliability (per class and cell)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_estimator_error_rates(metrics: dict[str, Any], path: Path, definition: str = "pixels") -> Path | None:
    """Error rate per uncertainty bin, one line per estimator, one panel per step count."""
    steps = _estimator_steps(metrics)
    if not steps:
        return None
    fig, axes = plt.subplots(1, len(steps), figsize=(4.6 * len(steps), 3.8), squeeze=False, sharey=True)
    for ax, s in zip(axes.flat, steps):
        for name, defs in metrics["steps"][s]["uncertainty_estimators"]["estimators"].items():
            stats = defs.get(definition)
            if not stats:
                continue
            rate = [np.nan if v is None else 100 * v for v in stats["error_rate"]]
            auroc = stats.get("auroc")
            ax.plot(_centres(stats["bin_edges"]), rate, marker="o", ms=3,
                    label=name + ("" if auroc is None else f" (AUROC {auroc:.2f})"))
        ax.set_title(f"{s} step{'s' if s != '1' else ''}: {DEFINITION_LABELS.get(definition, definition)}")
        ax.set_xlabel("uncertainty")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("error rate (%)")
    return _save(fig, path)


def markdown_estimators(metrics: dict[str, Any]) -> str:
    """Markdown: AUROC per estimator and error definition, and ECE, per step count ("" when absent)."""
    steps = _estimator_steps(metrics)
    if not steps:
        return ""
    first = metrics["steps"][steps[0]]["uncertainty_estimators"]
    definitions = list(first.get("definitions", DEFINITION_LABELS))
    names = list(first["estimators"])
    lines = ["### Uncertainty estimators: AUROC for wrong predictions", ""]
    for d in definitions:
        lines.append(f"- `{d}`: {first.get('definitions', {}).get(d, DEFINITION_LABELS.get(d, d))}")
    lines += ["", "| estimator | error definition | " + " | ".join(f"{s} step{'s' if s != '1' else ''}" for s in steps)
              + " |", "|---|---|" + "---:|" * len(steps)]

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for name in names:
        for d in definitions:
            cells = [fmt(metrics["steps"][s]["uncertainty_estimators"]["estimators"].get(name, {}).get(d, {}).get("auroc"))
                     for s in steps]
            lines.append(f"| {name} | {d} | " + " | ".join(cells) + " |")
    eces = [fmt(metrics["steps"][s]["uncertainty_estimators"]["calibration"].get("ece")) for s in steps]
    lines += ["| ECE of the probabilities (15 bins, per class and cell) | - | " + " | ".join(eces) + " |", ""]
    return "\n".join(lines)


def plot_frontier(rows: list[dict[str, Any]], path: Path, *, budget: float = 1.3) -> Path | None:
    """mIoU@0.50 and the best AUROC against whole-model latency / baseline, one marker per point.

    Colour = noise grid, marker = draws K, label = steps; the baseline head is the black star at
    1.0; the dotted line is the latency ``budget``.
    """
    rows = [r for r in rows if r.get("total_ratio") is not None]
    if not rows:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_q, ax_u) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"label": "tab:blue", "encoder": "tab:orange"}
    markers = {1: "o", 2: "s", 4: "^"}
    seen: set[tuple[str, int]] = set()
    for r in rows:
        x = r["total_ratio"]
        auroc = max((v for v in r["auroc"].values() if v is not None), default=None)
        if r["grid"] is None:
            for ax, y in ((ax_q, r["miou50"]), (ax_u, auroc)):
                if y is not None:
                    ax.scatter([x], [100 * y if ax is ax_q else y], marker="*", s=160, color="k", zorder=3,
                               label="baseline head")
            continue
        key = (r["grid"], r["draws"])
        label = None if key in seen else f"{r['grid']} grid, K={r['draws']}"
        seen.add(key)
        style = dict(color=colours.get(r["grid"], "grey"), marker=markers.get(r["draws"], "D"), s=36)
        if r["miou50"] is not None:
            ax_q.scatter([x], [100 * r["miou50"]], label=label, **style)
            ax_q.annotate(str(r["steps"]), (x, 100 * r["miou50"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        else:  # latency only: drawn on the axis floor
            ax_q.scatter([x], [0], label=label, alpha=0.35, **style)
        if auroc is not None:
            ax_u.scatter([x], [auroc], **style)
            ax_u.annotate(str(r["steps"]), (x, auroc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for ax, ylabel in ((ax_q, "mIoU@0.50 (%)"), (ax_u, "best AUROC for wrong pixels")):
        ax.axvline(budget, color="grey", ls=":", lw=1)
        ax.set_xlabel("whole-model latency / baseline head")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_q.set_title("quality vs cost (numbers = sampling steps)")
    ax_u.set_title("uncertainty vs cost")
    ax_q.legend(fontsize=7)
    return _save(fig, path)
