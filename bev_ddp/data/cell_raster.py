"""Exact cell-centre rasterisation of polygons and lines on a canvas (vectorised numpy).

Canvas coordinates put pixel edges at integers: cell ``(row r, column c)`` of a mask ``[H, W]``
has its centre at ``(x, y) = (c + 0.5, r + 0.5)`` (x along columns).  Units are canvas cells.

- :func:`fill_polygons_at_centres`: a cell is set iff its centre lies inside the union of the
  polygons (holes and multi-part polygons exact; polygons are closed: a centre on an edge, to
  :data:`TIE` cells, is inside).  Scanline over the cell-centre rows with the non-zero winding rule: each ring edge adds
  its direction (+1 up, -1 down) at the first column whose centre lies right of its crossing, and
  a cumulative sum along the row gives the winding number of every centre.  Exteriors and holes
  are oriented opposite ways (signed shoelace area), so a hole cancels its own polygon only and
  overlapping parts stay a union.
- :func:`mark_lines_near_centres`: a cell is set iff its centre lies within ``half_width`` cells of
  a line (point-to-segment distance ≤ ``half_width``).  Segments are cut into pieces no longer
  than :data:`_PIECE` cells, so a fixed window of candidate cells around each piece covers it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_PIECE = 4.0  # cells: longest segment piece of the line test
TIE = 1e-6  # cells: a centre this close to a polygon edge or a line's band edge counts as inside
_ROW_TIE = 1e-9  # cells: rows are scanned this far above and below the centre (≪ TIE, so that a
#                  centre on a vertex stays inside: the crossings move by slope · _ROW_TIE only)


def _ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, value): every integer of each half-open range ``[lo_k, hi_k)`` with its range index k."""
    counts = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo)), counts)
    starts = np.cumsum(counts) - counts
    value = np.arange(int(counts.sum())) - np.repeat(starts, counts) + lo[owner]
    return owner, value


def _ring_edges(polygons: Sequence) -> np.ndarray:
    """[E, 4] edges (x0, y0, x1, y1) of every ring, exteriors counter-clockwise, holes clockwise."""
    edges = []
    for polygon in polygons:
        for k, ring in enumerate((polygon.exterior, *polygon.interiors)):
            xy = np.asarray(ring.coords, dtype=np.float64)[:, :2]  # closed: last == first
            if len(xy) < 4:
                continue
            twice_area = float(np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]))  # shoelace, > 0: ccw
            if (twice_area > 0) == (k > 0):  # an exterior must turn ccw, a hole cw
                xy = xy[::-1]
            edges.append(np.concatenate([xy[:-1], xy[1:]], axis=1))
    return np.concatenate(edges) if edges else np.zeros((0, 4))


def fill_polygons_at_centres(polygons: Sequence, mask: np.ndarray) -> np.ndarray:
    """Set (to 1) the cells of ``mask`` [H, W] whose centre lies inside the union of ``polygons``.

    Polygons are closed: a centre within :data:`TIE` cells of an edge counts as inside, so the
    result does not depend on float noise when an edge runs through cell centres (it then commutes
    exactly with flips and quarter turns of the canvas).

    Args:
        polygons: shapely ``Polygon`` objects in canvas coordinates (cells).
        mask: [H, W] array, updated in place (cells outside keep their value).

    Returns:
        ``mask``.
    """
    height, width = mask.shape
    edges = _ring_edges(polygons)
    if not len(edges):
        return mask
    x0, y0, x1, y1 = edges.T
    direction = np.sign(y1 - y0)  # 0 for horizontal edges: they cross no row
    ymin, ymax = np.minimum(y0, y1), np.maximum(y0, y1)
    # each row is scanned twice, at r + 0.5 ∓ _ROW_TIE (a centre on a horizontal edge is
    # inside one of them); scan k = 2r + side.  Rows whose scan line lies in [ymin, ymax):
    lo, hi = [], []
    for side in (-1.0, 1.0):
        lo.append(np.clip(np.ceil(ymin - 0.5 - side * _ROW_TIE), 0, height))
        hi.append(np.clip(np.ceil(ymax - 0.5 - side * _ROW_TIE), 0, height))
    lo, hi = np.concatenate(lo).astype(np.int64), np.concatenate(hi).astype(np.int64)
    flat = np.concatenate([direction, direction]) == 0
    hi[flat] = lo[flat]
    owner, row = _ranges(lo, hi)
    if not len(row):
        return mask
    side = np.where(owner < len(edges), -1.0, 1.0)
    edge = owner % len(edges)
    t = (row + 0.5 + side * _ROW_TIE - y0[edge]) / (y1[edge] - y0[edge])
    x_cross = x0[edge] + t * (x1[edge] - x0[edge])
    # a crossing with direction +1 leaves the filled region left to right (exteriors ccw, holes cw),
    # -1 enters it: it counts for every column c whose centre c + 0.5 lies right of the crossing,
    # entering crossings TIE early and leaving ones TIE late (closed polygons)
    first = np.clip(np.floor(x_cross - 0.5 + direction[edge] * TIE) + 1, 0, width).astype(np.int64)
    scan = 2 * row + (side > 0)
    top, bottom = int(row.min()), int(row.max()) + 1  # only the rows the rings cross
    winding = np.bincount((scan - 2 * top) * (width + 1) + first, weights=direction[edge],
                          minlength=2 * (bottom - top) * (width + 1)).reshape(bottom - top, 2, width + 1)
    inside = (np.cumsum(winding[:, :, :width], axis=2) != 0).any(axis=1)  # [bottom - top, W]; exact sums of ±1
    mask[top:bottom][inside] = 1
    return mask


def _pieces(lines: Sequence) -> np.ndarray:
    """[S, 4] segments (x0, y0, x1, y1) of ``lines``, each cut into pieces of at most ``_PIECE`` cells."""
    segments = [np.concatenate([xy[:-1], xy[1:]], axis=1)
                for xy in (np.asarray(line.coords, dtype=np.float64)[:, :2] for line in lines) if len(xy) >= 2]
    if not segments:
        return np.zeros((0, 4))
    seg = np.concatenate(segments)
    length = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1])
    n = np.maximum(np.ceil(length / _PIECE), 1).astype(np.int64)
    owner, k = _ranges(np.zeros_like(n), n)
    a, b = seg[owner, :2], seg[owner, 2:]
    f0, f1 = (k / n[owner])[:, None], ((k + 1) / n[owner])[:, None]
    return np.concatenate([a + (b - a) * f0, a + (b - a) * f1], axis=1)


def mark_lines_near_centres(lines: Sequence, mask: np.ndarray, half_width: float) -> np.ndarray:
    """Set (to 1) the cells of ``mask`` [H, W] whose centre lies within ``half_width`` of a line.

    Args:
        lines: shapely ``LineString`` / ``LinearRing`` objects in canvas coordinates (cells).
        mask: [H, W] array, updated in place.
        half_width: distance from the line, in cells (a band about ``2·half_width`` cells wide).

    Returns:
        ``mask``.
    """
    height, width = mask.shape
    seg = _pieces(lines)
    if not len(seg):
        return mask
    span = int(np.ceil(_PIECE + 2 * half_width)) + 2  # candidate cells per axis around a piece
    offsets = np.arange(span)
    col0 = np.floor(np.minimum(seg[:, 0], seg[:, 2]) - half_width - 0.5).astype(np.int64)
    row0 = np.floor(np.minimum(seg[:, 1], seg[:, 3]) - half_width - 0.5).astype(np.int64)
    rows = row0[:, None, None] + offsets[None, :, None]  # [S, span, 1]
    cols = col0[:, None, None] + offsets[None, None, :]  # [S, 1, span]
    px, py = cols + 0.5, rows + 0.5
    ax, ay, bx, by = (v[:, None, None] for v in seg.T)
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    near = (px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2 <= (half_width + TIE) ** 2  # [S, span, span]
    rows, cols = np.broadcast_to(rows, near.shape)[near], np.broadcast_to(cols, near.shape)[near]
    ok = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    mask[rows[ok], cols[ok]] = 1
    return mask
