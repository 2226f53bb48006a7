"""Cell-centre rasterisation against shapely point tests (an independent oracle)."""
from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon, box

from bev_ddp.data.cell_raster import fill_polygons_at_centres, mark_lines_near_centres

H, W = 60, 80


def _centres():
    rows, cols = np.mgrid[0:H, 0:W]
    return cols.ravel() + 0.5, rows.ravel() + 0.5  # canvas (x, y) of every cell centre


def _random_polygon(rng, centre, radius, n=9):
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.4, 1.0, n)
    return Polygon(np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], 1))


def test_polygons_with_holes_and_overlaps_match_shapely_at_centres():
    rng = np.random.default_rng(0)
    x, y = _centres()
    for trial in range(20):
        polys = []
        for _ in range(3):  # overlapping parts, some reaching off the canvas, one with two holes
            c = rng.uniform([-10, -10], [W + 10, H + 10])
            outer = _random_polygon(rng, c, rng.uniform(8, 30))
            holes = [_random_polygon(rng, c + rng.uniform(-3, 3, 2), 2.5).exterior.coords for _ in range(2)]
            poly = Polygon(outer.exterior.coords, holes)
            polys.append(poly if poly.is_valid else outer)
        if trial % 2:  # clockwise exteriors and counter-clockwise holes must give the same cells
            polys = [shapely.geometry.polygon.orient(p, sign=-1.0) for p in polys]
        mask = fill_polygons_at_centres(polys, np.zeros((H, W), np.uint8))
        expected = shapely.contains_xy(shapely.union_all(polys), x, y).reshape(H, W)
        np.testing.assert_array_equal(mask.astype(bool), expected)
        assert 0 < expected.sum() < H * W


def test_a_thin_polygon_marks_only_the_centres_it_covers():
    # a 0.6-cell strip between centres of rows 10 and 11: an outline-filling raster marks 2 rows, centres 1 row
    strip = box(5.2, 10.3, 30.7, 10.9)
    mask = fill_polygons_at_centres([strip], np.zeros((H, W), np.uint8))
    assert mask.sum() == 26 and mask[10, 5:31].all()  # centres x = 5.5 .. 30.5 at y = 10.5


def test_edges_through_centres_are_closed_and_flips_commute():
    square = box(10.5, 20.5, 30.5, 40.5)  # every edge runs through cell centres
    mask = fill_polygons_at_centres([square], np.zeros((H, W), np.uint8))
    assert mask[20:41, 10:31].all() and mask.sum() == 21 * 21
    tri = Polygon([(10.5, 5.5), (40.5, 5.5), (10.5, 35.5)])  # legs and hypotenuse through centres
    base = fill_polygons_at_centres([tri], np.zeros((H, W), np.uint8))
    flipped = shapely.transform(tri, lambda xy: np.stack([W - xy[:, 0], xy[:, 1]], 1))
    np.testing.assert_array_equal(fill_polygons_at_centres([flipped], np.zeros((H, W), np.uint8)), base[:, ::-1])


def test_lines_mark_centres_within_the_half_width():
    rng = np.random.default_rng(1)
    x, y = _centres()
    points = shapely.points(x, y)
    for half_width in (0.5, 1.0, 2.3):
        lines = [LineString(rng.uniform([-5, -5], [W + 5, H + 5], (int(rng.integers(2, 6)), 2))) for _ in range(4)]
        lines.append(LineString([(3.0, 3.0), (70.0, 3.0)]))  # one long segment
        mask = mark_lines_near_centres(lines, np.zeros((H, W), np.uint8), half_width)
        distance = shapely.distance(shapely.union_all(lines), points)
        np.testing.assert_array_equal(mask.astype(bool), (distance <= half_width).reshape(H, W))


def test_empty_input_leaves_the_mask():
    mask = np.full((H, W), 7, np.uint8)
    assert (fill_polygons_at_centres([], mask) == 7).all() and (mark_lines_near_centres([], mask, 1.0) == 7).all()
