"""Ego routes through the synthetic town: lane-following with turns at intersections."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bev_ddp.data.synthetic.town import Road, Town

TURN_RADIUS = 5.5  # m; keeps a right turn inside the 1.75 m between lane centre and kerb


@dataclass
class Route:
    """A dense route polyline in the global frame.

    Attributes:
        points: [M, 2] positions every ~0.2 m (x, y in m).
        arc: [M] cumulative arc length, m.
    """

    points: np.ndarray
    arc: np.ndarray

    @property
    def length(self) -> float:
        return float(self.arc[-1])

    def position(self, s: float) -> np.ndarray:
        """[2] position (m) at arc length ``s`` (clamped to the route)."""
        s = float(np.clip(s, 0.0, self.length))
        return np.array([np.interp(s, self.arc, self.points[:, 0]), np.interp(s, self.arc, self.points[:, 1])])

    def pose(self, s: float) -> tuple[float, float, float]:
        """(x, y, yaw) at arc length ``s`` (m); yaw in radians from +x, from the chord over ±0.5 m."""
        x, y = self.position(s)
        dx, dy = self.position(s + 0.5) - self.position(s - 0.5)
        return float(x), float(y), float(np.arctan2(dy, dx))


def _lane_coordinate(road: Road, sign: float) -> float:
    """Fixed coordinate of the rightmost lane of ``road`` for travel toward ``sign`` along its axis."""
    offset = road.lane_offset(road.lanes_per_direction - 1)
    # right of +y is +x; right of +x is -y
    return road.centre + sign * offset if road.vertical else road.centre - sign * offset


def _corner_points(town: Town, rng: np.random.Generator, length: float) -> list[np.ndarray]:
    """Start point, turn corners and end point of a route of at least ``length`` m."""
    vertical = bool(rng.uniform() < 0.5)
    roads = town.vertical_roads if vertical else town.horizontal_roads
    road = roads[int(rng.integers(len(roads)))]
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    crossing = town.horizontal_roads if vertical else town.vertical_roads
    index = int(rng.integers(len(crossing) - 1)) if sign > 0 else int(rng.integers(1, len(crossing)))
    along0 = crossing[index].centre + sign * (crossing[index].half_width + rng.uniform(10.0, 25.0))

    def point(road: Road, along: float, sign: float) -> np.ndarray:
        lane = _lane_coordinate(road, sign)
        return np.array([lane, along]) if road.vertical else np.array([along, lane])

    points = [point(road, along0, sign)]
    total = 0.0
    while total < length:
        axis = 1 if road.vertical else 0
        crossing = town.horizontal_roads if road.vertical else town.vertical_roads
        ahead = sorted((c for c in crossing if (c.centre - points[-1][axis]) * sign > c.half_width),
                       key=lambda c: abs(c.centre - points[-1][axis]))
        if not ahead:  # cannot happen: every move leaves an intersection ahead
            break
        nxt = ahead[0]
        if len(ahead) > 1 and rng.uniform() < 0.5:  # straight through the intersection
            new = point(road, nxt.centre + sign * (nxt.half_width + 0.1), sign)
        else:  # turn onto ``nxt`` toward a side that has an intersection ahead
            parallel = town.vertical_roads if road.vertical else town.horizontal_roads
            options = [s for s in (-1.0, 1.0)
                       if any((p.centre - road.centre) * s > p.half_width + road.half_width for p in parallel)]
            new_sign = options[int(rng.integers(len(options)))]
            new = point(road, _lane_coordinate(nxt, new_sign), sign)
            road, sign = nxt, new_sign
        total += float(np.linalg.norm(new - points[-1]))
        points.append(new)
    axis = 1 if road.vertical else 0
    end = points[-1].copy()
    end[axis] += sign * (TURN_RADIUS + 5.0)
    points.append(end)
    return points


def _dense(points: list[np.ndarray], step: float = 0.2) -> np.ndarray:
    """Polyline through ``points`` with circular fillets of :data:`TURN_RADIUS` at the corners."""
    pts = [p for i, p in enumerate(points) if i == 0 or np.linalg.norm(p - points[i - 1]) > 1e-6]
    out = [pts[0]]
    for i in range(1, len(pts) - 1):
        a = pts[i] - pts[i - 1]
        b = pts[i + 1] - pts[i]
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        if abs(float(np.dot(a, b))) > 0.999:  # straight through
            out.append(pts[i])
            continue
        start = pts[i] - TURN_RADIUS * a
        phi = np.linspace(0.0, np.pi / 2, 24)
        centre = start + TURN_RADIUS * b
        out.append(start)
        out.extend(centre + TURN_RADIUS * (-np.cos(phi)[:, None] * b + np.sin(phi)[:, None] * a))
    out.append(pts[-1])
    coarse = np.stack(out)  # [M0, 2]
    seg = np.linalg.norm(np.diff(coarse, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    samples = np.arange(0.0, arc[-1], step)
    return np.stack([np.interp(samples, arc, coarse[:, 0]), np.interp(samples, arc, coarse[:, 1])], axis=1)


def plan_route(town: Town, rng: np.random.Generator, length: float) -> Route:
    """A random route of at least ``length`` m (when the town allows) in the rightmost lanes."""
    points = _dense(_corner_points(town, rng, length + 2 * TURN_RADIUS + 5.0))
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    return Route(points=points, arc=arc)
