"""Procedural town layout: a grid of roads with sidewalks, crossings, stop lines, car parks.

Everything is in the global map frame (metres, x east, y north, ground at z = 0).  The layout is
axis-aligned: vertical roads run along y at ``x = road.centre``, horizontal roads along x.
Traffic keeps right.  :func:`build_town` returns shapely geometry per map-expansion layer, the
box obstacles (buildings, parked cars) and the road grid used by the trajectory planner.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import LineString, Polygon, box
from shapely.ops import unary_union

LANE_WIDTH = 3.5  # m
WALKWAY_WIDTH = 3.0  # m
CROSSING_DEPTH = 4.0  # m along the road
STOP_LINE_DEPTH = 0.6  # m along the road
SETBACK = 1.0  # m between the crossing road's edge and the crossing


@dataclass(frozen=True)
class Road:
    """A straight road across the whole town.

    Attributes:
        vertical: True for a road along y (at x = centre), False for one along x.
        centre: x (vertical) or y (horizontal) of the road centre line, m.
        lanes_per_direction: 1 or 2.
    """

    vertical: bool
    centre: float
    lanes_per_direction: int

    @property
    def half_width(self) -> float:
        return self.lanes_per_direction * LANE_WIDTH

    def lane_offset(self, lane: int = 0) -> float:
        """Distance of a lane's centre line from the road centre (lane 0 = inner lane), m."""
        return (lane + 0.5) * LANE_WIDTH


@dataclass(frozen=True)
class StopLine:
    polygon: Polygon
    crossing_index: int | None  # index into Town.ped_crossings, None for a stop sign


@dataclass
class Town:
    """Map geometry (global frame) and obstacles of one synthetic town.

    Attributes:
        origin: (x, y) of the town's south-west corner, m.
        size: side length of the square town, m.
        vertical_roads, horizontal_roads: the road grid, sorted by centre.
        drivable_area: union of all roads (one polygon, blocks are holes).
        walkways, ped_crossings, carparks: polygons.
        stop_lines: polygons with the crossing they guard.
        road_dividers, lane_dividers: centre lines and lane lines (LineString).
        boxes: float [K, 6] axis-aligned obstacles (xmin, ymin, zmin, xmax, ymax, zmax), m.
        box_kinds: [K] "building" or "car".
        box_colours: uint8 [K, 3] base colour of each box.
    """

    origin: tuple[float, float]
    size: float
    vertical_roads: list[Road]
    horizontal_roads: list[Road]
    drivable_area: Polygon
    walkways: list[Polygon] = field(default_factory=list)
    ped_crossings: list[Polygon] = field(default_factory=list)
    crossing_stripes: list[Polygon] = field(default_factory=list)
    stop_lines: list[StopLine] = field(default_factory=list)
    carparks: list[Polygon] = field(default_factory=list)
    road_dividers: list[LineString] = field(default_factory=list)
    lane_dividers: list[LineString] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    box_kinds: list[str] = field(default_factory=list)
    box_colours: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))

    @property
    def drivable_parts(self) -> list[Polygon]:
        """The drivable area as a list of polygons (one for a connected road grid)."""
        area = self.drivable_area
        return [area] if area.geom_type == "Polygon" else list(area.geoms)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        x0, y0 = self.origin
        return x0, y0, x0 + self.size, y0 + self.size


def _road_positions(rng: np.random.Generator, origin: float, size: float) -> list[float]:
    positions, pos = [], origin + rng.uniform(35.0, 50.0)
    while pos < origin + size - 35.0:
        positions.append(float(pos))
        pos += rng.uniform(60.0, 85.0)
    return positions


def _span(a: float, b: float, vertical: bool, lo: float, hi: float) -> Polygon:
    """Rectangle spanning [a, b] across a road axis and [lo, hi] along it."""
    return box(a, lo, b, hi) if vertical else box(lo, a, hi, b)


def _segment(cross: float, lo: float, hi: float, vertical: bool) -> LineString:
    return LineString([(cross, lo), (cross, hi)]) if vertical else LineString([(lo, cross), (hi, cross)])


def _add_arm_markings(town: Town, rng: np.random.Generator, road: Road, cross: Road, toward_plus: bool) -> None:
    """Crossing, stop line on the arm of ``road`` leaving intersection with ``cross`` toward ±axis."""
    sign = 1.0 if toward_plus else -1.0
    edge = cross.centre + sign * cross.half_width
    a, b = road.centre - road.half_width, road.centre + road.half_width
    # traffic on this arm drives toward the intersection (toward -sign) and keeps right
    if road.vertical:
        incoming = (a, road.centre) if sign > 0 else (road.centre, b)
    else:
        incoming = (road.centre, b) if sign > 0 else (a, road.centre)
    near = edge + sign * SETBACK
    has_crossing = rng.uniform() < 0.65
    crossing_index = None
    if has_crossing:
        far = near + sign * CROSSING_DEPTH
        crossing = _span(a, b, road.vertical, min(near, far), max(near, far))
        town.ped_crossings.append(crossing)
        crossing_index = len(town.ped_crossings) - 1
        for stripe in np.arange(a + 0.5, b - 0.5, 1.0):
            town.crossing_stripes.append(_span(stripe, stripe + 0.5, road.vertical, min(near, far), max(near, far)))
        near = far + sign * 1.0
    if has_crossing or rng.uniform() < 0.5:
        far = near + sign * STOP_LINE_DEPTH
        poly = _span(incoming[0], incoming[1], road.vertical, min(near, far), max(near, far))
        town.stop_lines.append(StopLine(poly, crossing_index))


def _add_dividers(town: Town, road: Road, crossing_roads: list[Road], lo: float, hi: float) -> None:
    """Centre line and lane lines of ``road`` between consecutive crossing roads."""
    stops = [lo] + [v for r in crossing_roads for v in (r.centre - r.half_width, r.centre + r.half_width)] + [hi]
    gap = SETBACK + CROSSING_DEPTH + 1.0 + STOP_LINE_DEPTH + 1.0
    for start, end in zip(stops[0::2], stops[1::2]):
        s = start + (gap if start != lo else 0.0)
        e = end - (gap if end != hi else 0.0)
        if e - s < 2.0:
            continue
        town.road_dividers.append(_segment(road.centre, s, e, road.vertical))
        if road.lanes_per_direction > 1:
            for side in (-1.0, 1.0):
                town.lane_dividers.append(_segment(road.centre + side * LANE_WIDTH, s, e, road.vertical))


def _place_blocks(town: Town, rng: np.random.Generator) -> list[np.ndarray]:
    """Walkways, car parks, buildings and parked cars in every block between roads."""
    x0, y0, x1, y1 = town.bounds
    xs = [x0] + [v for r in town.vertical_roads for v in (r.centre - r.half_width, r.centre + r.half_width)] + [x1]
    ys = [y0] + [v for r in town.horizontal_roads for v in (r.centre - r.half_width, r.centre + r.half_width)] + [y1]
    boxes: list[np.ndarray] = []
    for bx0, bx1 in zip(xs[0::2], xs[1::2]):
        for by0, by1 in zip(ys[0::2], ys[1::2]):
            outer = box(bx0, by0, bx1, by1)
            inner = box(bx0 + WALKWAY_WIDTH, by0 + WALKWAY_WIDTH, bx1 - WALKWAY_WIDTH, by1 - WALKWAY_WIDTH)
            town.walkways.append(outer.difference(inner))
            ix0, iy0, ix1, iy1 = inner.bounds
            occupied: list[Polygon] = []
            if rng.uniform() < 0.6 and ix1 - ix0 > 30 and iy1 - iy0 > 25:
                w, d = rng.uniform(18.0, 28.0), rng.uniform(14.0, 20.0)
                cx = ix0 if rng.uniform() < 0.5 else ix1 - w
                cy = iy0 if rng.uniform() < 0.5 else iy1 - d
                carpark = box(cx, cy, cx + w, cy + d)
                town.carparks.append(carpark)
                occupied.append(carpark.buffer(2.0))
                for px in np.arange(cx + 1.5, cx + w - 2.0, 3.0):
                    if rng.uniform() < 0.5:
                        boxes.append(np.array([px, cy + 1.0, 0.0, px + 1.9, cy + 5.5, rng.uniform(1.4, 1.8)]))
                        town.box_kinds.append("car")
            for _ in range(int(rng.integers(2, 6))):
                w, d = rng.uniform(8.0, 25.0), rng.uniform(8.0, 25.0)
                if ix1 - ix0 - 4 < w or iy1 - iy0 - 4 < d:
                    continue
                cx, cy = rng.uniform(ix0 + 2, ix1 - 2 - w), rng.uniform(iy0 + 2, iy1 - 2 - d)
                building = box(cx, cy, cx + w, cy + d)
                if any(building.intersects(o) for o in occupied):
                    continue
                occupied.append(building.buffer(2.0))
                boxes.append(np.array([cx, cy, 0.0, cx + w, cy + d, rng.uniform(4.0, 18.0)]))
                town.box_kinds.append("building")
    return boxes


def build_town(rng: np.random.Generator, *, origin: tuple[float, float] = (150.0, 200.0), size: float = 320.0) -> Town:
    """Generate a town from ``rng`` (deterministic for a seeded generator)."""
    vertical = [Road(True, p, int(rng.integers(1, 3))) for p in _road_positions(rng, origin[0], size)]
    horizontal = [Road(False, p, int(rng.integers(1, 3))) for p in _road_positions(rng, origin[1], size)]
    x0, y0 = origin
    x1, y1 = x0 + size, y0 + size
    rects = [box(r.centre - r.half_width, y0, r.centre + r.half_width, y1) for r in vertical]
    rects += [box(x0, r.centre - r.half_width, x1, r.centre + r.half_width) for r in horizontal]
    town = Town(origin=origin, size=size, vertical_roads=vertical, horizontal_roads=horizontal,
                drivable_area=unary_union(rects))
    arms = [(r, horizontal, y0, y1) for r in vertical] + [(r, vertical, x0, x1) for r in horizontal]
    for road, crossing_roads, lo, hi in arms:
        for cross in crossing_roads:
            for toward_plus in (False, True):
                _add_arm_markings(town, rng, road, cross, toward_plus)
        _add_dividers(town, road, crossing_roads, lo, hi)
    boxes = _place_blocks(town, rng)
    town.boxes = np.stack(boxes) if boxes else np.zeros((0, 6))
    colours = []
    for kind in town.box_kinds:
        if kind == "building":
            colours.append(rng.integers(90, 200, size=3))
        else:
            colours.append(rng.integers(20, 255, size=3))
    town.box_colours = np.array(colours, dtype=np.uint8).reshape(-1, 3)
    return town
