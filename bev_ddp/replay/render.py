"""Images of BEV predictions for viewing (PNG frames, MP4, the MCAP's image channel).

BEV arrays are ``[C, X, Y]`` / ``[X, Y]`` in the LiDAR frame, which on nuScenes (and the synthetic
rig) has x to the vehicle's right and y forward.  Images are drawn as seen from above with the
vehicle heading up: image row 0 is the far front (largest y), image column 0 the far left
(smallest x), as the report's ``maps.png``.
"""
from __future__ import annotations

import io

import matplotlib
import numpy as np
from PIL import Image

#: RGB per map class, in the class order of the model output (drivable_area, ped_crossing,
#: walkway, stop_line, carpark_area, divider).
CLASS_COLOURS = np.array(
    [[166, 206, 227], [251, 154, 153], [227, 26, 28], [253, 191, 111], [255, 127, 0], [106, 61, 154]],
    dtype=np.uint8,
)
BACKGROUND = np.array([240, 240, 240], dtype=np.uint8)


def to_view(bev: np.ndarray) -> np.ndarray:
    """[X, Y, ...] BEV array → [H=Y, W=X, ...] top view, heading (+y) up, right (+x) on the right."""
    return np.swapaxes(bev, 0, 1)[::-1]


def argmax_labels(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """int64 [X, Y]: most probable class among those with probability ≥ ``threshold``; −1 where none.

    Args:
        probs: float [C, X, Y] per-class probabilities (multi-label, sigmoid outputs).
    """
    labels = probs.argmax(axis=0)
    labels[probs.max(axis=0) < threshold] = -1
    return labels


def colourise_labels(labels: np.ndarray) -> np.ndarray:
    """[X, Y] labels (−1 = background) → uint8 [H, W, 3] top-view RGB image."""
    if labels.size and labels.max() >= len(CLASS_COLOURS):
        raise ValueError(f"label {labels.max()} has no colour; {len(CLASS_COLOURS)} classes are known")
    palette = np.concatenate([CLASS_COLOURS, BACKGROUND[None]], axis=0)  # index −1 → background
    return np.ascontiguousarray(to_view(palette[labels]))


def colourise_scalar(values: np.ndarray, cmap: str = "magma") -> np.ndarray:
    """[X, Y] values in [0, 1] → uint8 [H, W, 3] top-view image with a matplotlib colour map."""
    rgba = matplotlib.colormaps[cmap](np.clip(values, 0.0, 1.0))  # [X, Y, 4] float
    return np.ascontiguousarray(to_view((rgba[..., :3] * 255).round().astype(np.uint8)))


def panel(probs: np.ndarray, uncertainty: np.ndarray, threshold: float = 0.5, min_size: int = 256) -> np.ndarray:
    """uint8 [s·Y, 2·s·X + 4, 3]: argmax map and uncertainty side by side (white gap of 4 px),
    enlarged by the integer factor ``s`` (nearest) that makes them at least ``min_size`` px tall."""
    scale = max(1, -(-min_size // probs.shape[2]))
    left = colourise_labels(argmax_labels(probs, threshold)).repeat(scale, axis=0).repeat(scale, axis=1)
    right = colourise_scalar(uncertainty).repeat(scale, axis=0).repeat(scale, axis=1)
    gap = np.full((left.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
