"""A small tf buffer: static and time-stamped transforms between named frames.

Edges are stored as child → parent 4×4 matrices (float64, metres).  :meth:`TransformTree.lookup`
walks the tree between any two frames and, for time-stamped edges, interpolates between the two
nearest samples (translation linearly, rotation by spherical linear interpolation with scipy).
A stamp outside an edge's recorded interval is answered with the nearest sample when it is at
most ``max_extrapolation_ns`` away, else the edge counts as missing (like tf2's extrapolation
error).
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


@dataclass
class _TimedEdge:
    stamps: list[int] = field(default_factory=list)  # ns, sorted
    matrices: list[np.ndarray] = field(default_factory=list)  # [4, 4] child -> parent

    def add(self, stamp: int, matrix: np.ndarray) -> None:
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            self.matrices[i] = matrix
            return
        self.stamps.insert(i, stamp)
        self.matrices.insert(i, matrix)

    def at(self, stamp: int, max_extrapolation_ns: int) -> np.ndarray | None:
        if not self.stamps:
            return None
        i = bisect.bisect_left(self.stamps, stamp)
        if i < len(self.stamps) and self.stamps[i] == stamp:
            return self.matrices[i]
        if i == 0 or i == len(self.stamps):
            nearest = 0 if i == 0 else len(self.stamps) - 1
            if abs(self.stamps[nearest] - stamp) > max_extrapolation_ns:
                return None
            return self.matrices[nearest]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        m0, m1 = self.matrices[i - 1], self.matrices[i]
        w = (stamp - t0) / (t1 - t0)
        out = np.eye(4)
        out[:3, 3] = (1.0 - w) * m0[:3, 3] + w * m1[:3, 3]
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([m0[:3, :3], m1[:3, :3]])))
        out[:3, :3] = slerp([w]).as_matrix()[0]
        return out


class TransformTree:
    """Transforms between named frames, as recorded on ``/tf`` and ``/tf_static``.

    Args:
        max_extrapolation_ns: how far outside its recorded interval a time-stamped edge may be
            queried (answered with the nearest sample).
    """

    def __init__(self, *, max_extrapolation_ns: int = 100_000_000) -> None:
        self.max_extrapolation_ns = int(max_extrapolation_ns)
        self._static: dict[tuple[str, str], np.ndarray] = {}  # (parent, child) -> [4, 4]
        self._timed: dict[tuple[str, str], _TimedEdge] = {}
        self._neighbours: dict[str, set[str]] = {}

    def _link(self, parent: str, child: str) -> None:
        self._neighbours.setdefault(parent, set()).add(child)
        self._neighbours.setdefault(child, set()).add(parent)

    def add_static(self, parent: str, child: str, child_to_parent: np.ndarray) -> None:
        self._static[(parent, child)] = np.asarray(child_to_parent, dtype=np.float64)
        self._link(parent, child)

    def add(self, parent: str, child: str, stamp_ns: int, child_to_parent: np.ndarray) -> None:
        self._timed.setdefault((parent, child), _TimedEdge()).add(
            int(stamp_ns), np.asarray(child_to_parent, dtype=np.float64)
        )
        self._link(parent, child)

    def has_frame(self, frame: str) -> bool:
        return frame in self._neighbours

    def _edge(self, parent: str, child: str, stamp_ns: int) -> np.ndarray | None:
        if (parent, child) in self._static:
            return self._static[(parent, child)]
        if (parent, child) in self._timed:
            return self._timed[(parent, child)].at(stamp_ns, self.max_extrapolation_ns)
        return None

    def _path(self, source: str, target: str) -> list[str] | None:
        """Frames from ``source`` to ``target`` (breadth-first search), ``None`` if unconnected."""
        if source not in self._neighbours or target not in self._neighbours:
            return None
        previous: dict[str, str | None] = {source: None}
        queue = deque([source])
        while queue:
            frame = queue.popleft()
            if frame == target:
                break
            for nxt in self._neighbours[frame]:
                if nxt not in previous:
                    previous[nxt] = frame
                    queue.append(nxt)
        if target not in previous:
            return None
        path = [target]
        while path[-1] != source:
            path.append(previous[path[-1]])  # type: ignore[arg-type]
        return path[::-1]

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray | None:
        """float64 [4, 4] mapping points of frame ``source`` into frame ``target`` at ``stamp_ns``.

        Returns ``None`` when the frames are not connected or a time-stamped edge on the way has
        no sample near ``stamp_ns``.
        """
        if source == target:
            return np.eye(4)
        path = self._path(source, target)
        if path is None:
            return None
        result = np.eye(4)  # source -> current frame
        for here, nxt in zip(path[:-1], path[1:]):
            up = self._edge(nxt, here, stamp_ns)  # here is a child of nxt
            if up is not None:
                step = up
            else:
                down = self._edge(here, nxt, stamp_ns)  # nxt is a child of here
                if down is None:
                    return None
                step = np.linalg.inv(down)
            result = step @ result
        return result
