"""PNG figures of an evaluation (matplotlib, Agg backend: no display needed).

Every function takes the metrics dict of :mod:`bev_ddp.report.writer` (or the visuals arrays)
and writes one PNG, returning its path, or ``None`` when the metrics hold nothing to draw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)
import numpy as np  # noqa: E402

from bev_ddp.report.tables import class_names, display_scale, step_keys, summary_names  # noqa: E402

# one colour per class, in class order (tab10 without grey)
PALETTE = np.array(plt.get_cmap("tab10").colors)[[0, 1, 2, 3, 4, 5, 6, 8, 9]]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metric_vs_threshold(metrics: dict[str, Any], path: Path) -> Path | None:
    """Per-class metric vs probability threshold, one panel per step count."""
    steps = [s for s in step_keys(metrics) if "per_threshold" in metrics["steps"][s]]
    if not steps:
        return None
    cols = min(len(steps), 3)
    rows = (len(steps) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False, sharey=True)
    metric = metrics.get("metric", "score")
    for ax, s in zip(axes.flat, steps):
        table = metrics["steps"][s]["per_threshold"]
        thr = table["thresholds"]
        for i, name in enumerate(class_names(metrics)):
            if name in table["per_class"]:
                ax.plot(thr, np.array(table["per_class"][name]) * 100, marker="o", ms=3,
                        color=PALETTE[i % len(PALETTE)], label=name)
        if "mean" in table:
            ax.plot(thr, np.array(table["mean"]) * 100, color="k", lw=2, ls="--", label="mean")
        ax.set_title(f"{s} step{'s' if s != '1' else ''}")
        ax.set_xlabel("threshold")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(steps):]:
        ax.axis("off")
    axes[0, 0].set_ylabel(f"{metric} (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    # one legend for all panels, right of them, so no curve is hidden behind it
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_summary_vs_steps(metrics: dict[str, Any], path: Path) -> Path | None:
    """Summary metrics (e.g. mIoU, mIoU@0.50) against the number of sampling steps."""
    steps = step_keys(metrics)
    names = summary_names(metrics)
    if not steps or not names:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    x = [int(s) for s in steps]
    for name in names:
        scale = display_scale(metrics, name)
        y = [metrics["steps"][s].get("summary", {}).get(name) for s in steps]
        y = [np.nan if v is None else v * scale for v in y]
        ax.plot(x, y, marker="o", label=f"{name}{' (%)' if scale == 100.0 else ''}")
    ax.set_xticks(x)
    ax.set_xlabel("sampling steps")
    ax.set_title("metrics vs sampling steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_uncertainty_vs_error(metrics: dict[str, Any], path: Path) -> Path | None:
    """Error rate per uncertainty bin (line) and pixel share per bin (bars), per step count."""
    steps = [s for s in step_keys(metrics) if metrics["steps"][s].get("uncertainty", {}).get("pixels")]
    if not steps:
        return None
    fig, (ax_err, ax_share) = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(steps)
    for j, s in enumerate(steps):
        unc = metrics["steps"][s]["uncertainty"]
        edges = np.array(unc["bin_edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        rate = np.array([np.nan if r is None else r for r in unc["error_rate"]], dtype=float)
        pixels = np.array(unc["pixels"], dtype=float)
        auroc = unc.get("auroc")
        label = f"{s} step{'s' if s != '1' else ''}" + (f" (AUROC {auroc:.2f})" if auroc is not None else "")
        keep = pixels > 0
        ax_err.plot(centres[keep], rate[keep] * 100, marker="o", ms=3, label=label)
        share = pixels / max(pixels.sum(), 1)
        ax_share.bar(centres + (j - (len(steps) - 1) / 2) * width * (edges[1] - edges[0]), share * 100,
                     width=width * (edges[1] - edges[0]), label=label)
    ax_err.set_xlabel("uncertainty")
    ax_err.set_ylabel("pixel error rate (%)")
    ax_err.set_title("error rate by uncertainty")
    ax_err.grid(alpha=0.3)
    ax_err.legend(fontsize=8)
    ax_share.set_xlabel("uncertainty")
    ax_share.set_ylabel("share of pixels (%)")
    ax_share.set_yscale("log")
    ax_share.set_title("uncertainty histogram")
    return _save(fig, path)


def _multilabel_rgb(masks: np.ndarray) -> np.ndarray:
    """[K, H, W] bool -> [H, W, 3] float: classes painted in order over a white background."""
    rgb = np.ones((*masks.shape[1:], 3))
    for k in range(masks.shape[0]):
        rgb[masks[k]] = PALETTE[k % len(PALETTE)]
    return rgb


def _labels_rgb(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[H, W] int -> [H, W, 3]; labels outside [0, num_classes) (ignore) are black."""
    colours = plt.get_cmap("tab20", max(num_classes, 1))(np.arange(max(num_classes, 1)))[:, :3]
    rgb = np.zeros((*labels.shape, 3))
    valid = (labels >= 0) & (labels < num_classes)
    rgb[valid] = colours[labels[valid]]
    return rgb


def _panel(kind: str, arr: np.ndarray, num_classes: int) -> tuple[np.ndarray, dict[str, Any]]:
    if kind == "multilabel":
        return _multilabel_rgb(arr.astype(np.float32) >= 0.5), {}
    if kind == "labels":
        return _labels_rgb(arr.astype(np.int64), num_classes), {}
    return arr.astype(np.float32), {"cmap": "magma"}


def _bev_extent(visuals: dict[str, np.ndarray]) -> tuple[list[float], str]:
    """imshow extent (left, right, bottom, top) of a BEV grid drawn with x right / y up, and the unit."""
    if "xbound" in visuals and "ybound" in visuals:
        (x0, x1, _), (y0, y1, _) = np.asarray(visuals["xbound"]), np.asarray(visuals["ybound"])
        return [float(x0), float(x1), float(y0), float(y1)], "m"
    size_x, size_y = visuals["gt"].shape[-2:]
    return [0.0, float(size_x), 0.0, float(size_y)], "cells"


def _ego_marker(ax: Any, unit: str, extent: list[float]) -> None:
    """A triangle at the LiDAR origin pointing forward (+y: the heading on nuScenes and the synthetic rig)."""
    if unit != "m" or not (extent[0] < 0 < extent[1] and extent[2] < 0 < extent[3]):
        return
    size = 0.04 * (extent[3] - extent[2])
    ax.add_patch(plt.Polygon([[0.0, size], [-0.6 * size, -0.6 * size], [0.6 * size, -0.6 * size]],
                             closed=True, facecolor="red", edgecolor="white", lw=0.6, zorder=5))


def plot_maps(visuals: dict[str, np.ndarray], path: Path) -> Path | None:
    """Per kept sample: ground truth, then prediction and uncertainty for every step count.

    ``visuals`` (see ``BEVIoUEvaluator.visuals``): ``kind`` = ``multilabel`` ([N, K, H, W]
    probabilities, drawn at threshold 0.5), ``labels`` ([N, H, W] class ids) or ``scalar``
    ([N, H, W], e.g. depth); ``gt``; ``probs_<s>`` or ``pred_<s>``; optional
    ``uncertainty_<s>``, ``image`` [N, H, W, 3] uint8, ``frame`` = ``bev`` (arrays are
    [X, Y] in the lidar frame, drawn with x to the right and y up: for the nuScenes top LiDAR,
    x = ego right and y = ego forward, so the ego drives up the page) and ``xbound`` / ``ybound``
    (min, max, step) m for metre ticks.  BEV panels show the ego vehicle as a red triangle at the
    LiDAR origin pointing forward; uncertainty panels have a colour bar (0 = every step agreed,
    1 = the map changed at every step).
    """
    if not visuals or "gt" not in visuals:
        return None
    kind = str(visuals.get("kind", "multilabel"))
    steps = [int(s) for s in np.atleast_1d(visuals.get("steps", []))]
    classes = [str(c) for c in np.atleast_1d(visuals.get("classes", []))]
    names = [str(n) for n in np.atleast_1d(visuals.get("names", []))]
    bev = str(visuals.get("frame", "bev" if kind == "multilabel" else "image")) == "bev"
    extent, unit = _bev_extent(visuals) if bev else (None, "")
    gt = visuals["gt"]
    n = gt.shape[0]
    has_image = "image" in visuals
    columns = (["image"] if has_image else []) + ["ground truth"]
    for s in steps:
        columns.append(f"prediction, {s} step{'s' if s != 1 else ''}")
        if f"uncertainty_{s}" in visuals:
            columns.append(f"uncertainty, {s} step{'s' if s != 1 else ''}")
    fig, axes = plt.subplots(n, len(columns), figsize=(3.0 * len(columns), 2.9 * n + 0.7), squeeze=False)

    def show(ax: Any, img: np.ndarray, **kw: Any) -> Any:
        if bev:
            img = np.swapaxes(img, 0, 1)[::-1]  # [X, Y] grid drawn with lidar x to the right and y up
            shown = ax.imshow(img, interpolation="nearest", extent=extent, **kw)
            ax.tick_params(labelsize=6)
            _ego_marker(ax, unit, extent)
        else:
            shown = ax.imshow(img, interpolation="nearest", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
        return shown

    for i in range(n):
        col = 0
        if has_image:
            axes[i, col].imshow(visuals["image"][i])
            axes[i, col].set_xticks([])
            axes[i, col].set_yticks([])
            col += 1
        img, kw = _panel(kind, gt[i], len(classes))
        show(axes[i, col], img, **kw)
        col += 1
        for s in steps:
            pred = visuals.get(f"probs_{s}", visuals.get(f"pred_{s}"))
            if pred is not None:
                img, kw = _panel(kind, pred[i], len(classes))
                show(axes[i, col], img, **kw)
            col += 1
            if f"uncertainty_{s}" in visuals:
                shown = show(axes[i, col], visuals[f"uncertainty_{s}"][i].astype(np.float32), cmap="viridis", vmin=0,
                             vmax=1)
                bar = fig.colorbar(shown, ax=axes[i, col], fraction=0.046, pad=0.03)
                bar.ax.tick_params(labelsize=6)
                col += 1
        if names:
            axes[i, 0].set_ylabel(names[i][:16], fontsize=7)
    for j, title in enumerate(columns):
        axes[0, j].set_title(title, fontsize=8)
    if bev:
        axes[-1, 0].set_xlabel(f"lidar x ({unit}), right; y ({unit}) up = forward; red: ego", fontsize=6)
    if kind == "multilabel" and classes:
        handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[k % len(PALETTE)]) for k in range(len(classes))]
        fig.legend(handles, classes, loc="lower center", ncol=min(len(classes), 6), fontsize=7)
        fig.tight_layout(rect=(0, 0.7 / (2.9 * n + 0.7), 1, 1))
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    return _save(fig, path)
