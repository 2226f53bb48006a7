"""Write a town as a nuScenes map-expansion JSON (v1.3 layout) and a semantic-prior basemap PNG.

Geometry is stored the devkit's way: ``node`` (x, y), ``polygon`` (exterior node tokens and
holes), ``line`` (node tokens); the semantic layers reference them by token.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
from shapely.geometry import LineString, Polygon

from bev_ddp.data.synthetic.town import Town

MAP_VERSION = "1.3"
BASEMAP_RESOLUTION = 0.1  # m per pixel, as the nuScenes semantic prior
BASEMAP_MARGIN = 10.0  # m of canvas beyond the town's north-east corner


def make_token(*parts: object) -> str:
    """Deterministic 32-hex token (nuScenes token format) from its parts."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


class _Builder:
    def __init__(self, salt: str) -> None:
        self.salt = salt
        self.node: list[dict] = []
        self.line: list[dict] = []
        self.polygon: list[dict] = []

    def _nodes(self, coords) -> list[str]:
        tokens = []
        for x, y in coords:
            token = make_token(self.salt, "node", len(self.node))
            self.node.append({"token": token, "x": float(x), "y": float(y)})
            tokens.append(token)
        return tokens

    def add_polygon(self, poly: Polygon) -> str:
        token = make_token(self.salt, "polygon", len(self.polygon))
        exterior = self._nodes(list(poly.exterior.coords)[:-1])
        holes = [{"node_tokens": self._nodes(list(ring.coords)[:-1])} for ring in poly.interiors]
        self.polygon.append({"token": token, "exterior_node_tokens": exterior, "holes": holes})
        return token

    def add_line(self, line: LineString) -> str:
        token = make_token(self.salt, "line", len(self.line))
        self.line.append({"token": token, "node_tokens": self._nodes(list(line.coords))})
        return token


def town_to_map_json(town: Town, salt: str) -> dict:
    """The map-expansion dictionary of ``town`` (every layer ``NuScenesMap`` reads)."""
    b = _Builder(salt)
    crossings = [{"token": make_token(salt, "ped_crossing", i), "polygon_token": b.add_polygon(p),
                  "road_segment_token": ""} for i, p in enumerate(town.ped_crossings)]
    stop_lines = []
    for i, stop in enumerate(town.stop_lines):
        stop_lines.append({
            "token": make_token(salt, "stop_line", i),
            "polygon_token": b.add_polygon(stop.polygon),
            "stop_line_type": "PED_CROSSING" if stop.crossing_index is not None else "STOP_SIGN",
            "ped_crossing_tokens": [] if stop.crossing_index is None else [crossings[stop.crossing_index]["token"]],
            "traffic_light_tokens": [],
            "road_block_token": "",
        })
    lane_dividers = []
    for i, line in enumerate(town.lane_dividers):
        token = b.add_line(line)
        nodes = b.line[-1]["node_tokens"]
        lane_dividers.append({"token": make_token(salt, "lane_divider", i), "line_token": token,
                              "lane_divider_segments": [{"node_token": n, "segment_type": "DOUBLE_DASHED_WHITE"}
                                                        for n in nodes]})
    _, _, x1, y1 = town.bounds
    return {
        "version": MAP_VERSION,
        "canvas_edge": [float(x1 + BASEMAP_MARGIN), float(y1 + BASEMAP_MARGIN)],
        "drivable_area": [{"token": make_token(salt, "drivable_area", 0),
                           "polygon_tokens": [b.add_polygon(p) for p in town.drivable_parts]}],
        "road_segment": [],
        "road_block": [],
        "lane": [],
        "ped_crossing": crossings,
        "walkway": [{"token": make_token(salt, "walkway", i), "polygon_token": b.add_polygon(p)}
                    for i, p in enumerate(town.walkways)],
        "stop_line": stop_lines,
        "carpark_area": [{"token": make_token(salt, "carpark_area", i), "polygon_token": b.add_polygon(p),
                          "orientation": 0.0, "road_block_token": ""} for i, p in enumerate(town.carparks)],
        "road_divider": [{"token": make_token(salt, "road_divider", i), "line_token": b.add_line(line),
                          "road_segment_token": ""} for i, line in enumerate(town.road_dividers)],
        "lane_divider": lane_dividers,
        "traffic_light": [],
        "lane_connector": [],
        "arcline_path_3": {},
        "connectivity": {},
        "node": b.node,
        "line": b.line,
        "polygon": b.polygon,
    }


def write_map_expansion(dataroot: Path, location: str, town: Town, salt: str) -> Path:
    path = dataroot / "maps" / "expansion" / f"{location}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(town_to_map_json(town, salt)), encoding="utf-8")
    return path


def write_basemap(dataroot: Path, filename: str, town: Town) -> Path:
    """Semantic prior PNG (255 on drivable area and walkways, 0.1 m/px, row 0 = north edge)."""
    x0, y0, x1, y1 = town.bounds
    width = int(np.ceil((x1 + BASEMAP_MARGIN) / BASEMAP_RESOLUTION))
    height = int(np.ceil((y1 + BASEMAP_MARGIN) / BASEMAP_RESOLUTION))
    image = np.zeros((height, width), np.uint8)

    def pix(coords) -> np.ndarray:
        xy = np.asarray(coords)
        cols, rows = xy[:, 0] / BASEMAP_RESOLUTION, height - xy[:, 1] / BASEMAP_RESOLUTION
        return np.stack([cols, rows], 1).round().astype(np.int32)

    for poly in town.drivable_parts + list(town.walkways):
        cv2.fillPoly(image, [pix(poly.exterior.coords)], 255)
        for ring in poly.interiors:
            cv2.fillPoly(image, [pix(ring.coords)], 0)
    for walkway in town.walkways:  # walkway rings lie in drivable holes: repaint them
        cv2.fillPoly(image, [pix(walkway.exterior.coords)], 255)
        for ring in walkway.interiors:
            cv2.fillPoly(image, [pix(ring.coords)], 0)
    path = dataroot / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return path
