"""Ray casting of the synthetic town: camera images, semantic labels, depth and LiDAR scans.

The ground is the plane z = 0 of the global frame, coloured by a surface raster painted from the
map geometry (0.1 m cells); obstacles are axis-aligned boxes.  Every function is vectorised over
rays with numpy and deterministic (sensor noise comes from an explicit ``np.random.Generator``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from shapely.geometry import LineString
from shapely.ops import substring

from bev_ddp.data.sensors import LidarSpec
from bev_ddp.data.synthetic.town import Town

# semantic classes of the exported image labels (ground classes first follow MAP_CLASSES)
SEG_CLASSES: tuple[str, ...] = (
    "sky", "terrain", "drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider",
    "building", "car",
)
SKY, TERRAIN, DRIVABLE, CROSSING, WALKWAY, STOP_LINE, CARPARK, DIVIDER, BUILDING, CAR = range(len(SEG_CLASSES))

# surface paints: id -> (RGB, LiDAR intensity)
PAINTS: dict[str, tuple[tuple[int, int, int], float]] = {
    "terrain": ((88, 104, 62), 6.0),
    "asphalt": ((72, 72, 78), 12.0),
    "carpark": ((118, 104, 92), 18.0),
    "walkway": ((164, 152, 140), 34.0),
    "crossing_stripe": ((232, 232, 228), 100.0),
    "stop_line": ((244, 244, 244), 110.0),
    "divider": ((222, 188, 40), 85.0),
    "lane_line": ((224, 224, 224), 95.0),
}
PAINT_IDS = {name: i for i, name in enumerate(PAINTS)}
PAINT_RGB = np.array([rgb for rgb, _ in PAINTS.values()], dtype=np.float32)  # [P, 3]
PAINT_INTENSITY = np.array([i for _, i in PAINTS.values()], dtype=np.float32)  # [P]
BOX_INTENSITY = {"building": 40.0, "car": 60.0}
SKY_HORIZON = np.array([205.0, 216.0, 228.0])
SKY_ZENITH = np.array([96.0, 140.0, 206.0])
HAZE = np.array([190.0, 198.0, 205.0])

RASTER_RESOLUTION = 0.1  # m per cell
DIVIDER_WIDTH = 0.35  # m of paint
LANE_LINE_WIDTH = 0.2
DASH = 3.0  # m dash and gap of lane lines
_SHIFT = 3


@dataclass
class SurfaceRaster:
    """Ground appearance and class in global x/y.

    Attributes:
        origin: (x, y) of the corner of cell [0, 0], m.  resolution: m per cell.
        paint: uint8 [R, C] paint id (row = y, column = x).  label: uint8 [R, C] seg class id.
    """

    origin: tuple[float, float]
    resolution: float
    paint: np.ndarray
    label: np.ndarray

    def lookup(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Paint id and seg class at [N, 2] global points (terrain outside the raster)."""
        col = np.floor((xy[:, 0] - self.origin[0]) / self.resolution).astype(np.int64)
        row = np.floor((xy[:, 1] - self.origin[1]) / self.resolution).astype(np.int64)
        inside = (row >= 0) & (row < self.paint.shape[0]) & (col >= 0) & (col < self.paint.shape[1])
        paint = np.full(len(xy), PAINT_IDS["terrain"], np.uint8)
        label = np.full(len(xy), TERRAIN, np.uint8)
        paint[inside] = self.paint[row[inside], col[inside]]
        label[inside] = self.label[row[inside], col[inside]]
        return paint, label


def _cells(raster: SurfaceRaster, coords: np.ndarray) -> np.ndarray:
    scaled = (np.asarray(coords)[:, :2] - np.asarray(raster.origin)) / raster.resolution - 0.5
    return np.round(scaled * (1 << _SHIFT)).astype(np.int32)


def _stroke(raster: SurfaceRaster, target: np.ndarray, lines: list[LineString], value: int, width: float) -> None:
    thickness = max(1, int(round(width / raster.resolution)))
    for line in lines:
        cv2.polylines(target, [_cells(raster, np.asarray(line.coords))], False, value, thickness, shift=_SHIFT)


def _dashes(line: LineString) -> list[LineString]:
    return [substring(line, s, min(s + DASH, line.length)) for s in np.arange(0.0, line.length, 2 * DASH)]


def paint_town(town: Town, margin: float = 60.0) -> SurfaceRaster:
    """Rasterise the town's ground surfaces (paint and seg class) at :data:`RASTER_RESOLUTION`."""
    x0, y0, x1, y1 = town.bounds
    origin = (x0 - margin, y0 - margin)
    cols = int(np.ceil((x1 - x0 + 2 * margin) / RASTER_RESOLUTION))
    rows = int(np.ceil((y1 - y0 + 2 * margin) / RASTER_RESOLUTION))
    raster = SurfaceRaster(origin, RASTER_RESOLUTION, np.full((rows, cols), PAINT_IDS["terrain"], np.uint8),
                           np.full((rows, cols), TERRAIN, np.uint8))
    # painted in order; a polygon's holes are reset to terrain, so polygons with holes (the drivable
    # area, walkway rings) go first and nothing painted later lies in their holes' way
    layers = [
        (town.drivable_parts, "asphalt", DRIVABLE),
        (town.walkways, "walkway", WALKWAY),
        (town.carparks, "carpark", CARPARK),
        (town.ped_crossings, "asphalt", CROSSING),
        (town.crossing_stripes, "crossing_stripe", CROSSING),
        ([s.polygon for s in town.stop_lines], "stop_line", STOP_LINE),
    ]
    for polygons, paint, label in layers:
        for poly in polygons:
            targets = ((raster.paint, PAINT_IDS[paint], PAINT_IDS["terrain"]), (raster.label, label, TERRAIN))
            for target, value, hole in targets:
                cv2.fillPoly(target, [_cells(raster, np.asarray(poly.exterior.coords))], value, shift=_SHIFT)
                for ring in poly.interiors:
                    cv2.fillPoly(target, [_cells(raster, np.asarray(ring.coords))], hole, shift=_SHIFT)
    dashes = [d for line in town.lane_dividers for d in _dashes(line)]
    for lines, paint, width in ((town.road_dividers, "divider", DIVIDER_WIDTH), (dashes, "lane_line", LANE_LINE_WIDTH)):
        _stroke(raster, raster.paint, lines, PAINT_IDS[paint], width)
        _stroke(raster, raster.label, lines, DIVIDER, width)
    return raster


def _hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic per-cell uniform noise in [0, 1) from integer cell coordinates."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / 65536.0


def ground_texture(xy: np.ndarray) -> np.ndarray:
    """Multiplicative brightness texture [N] (≈ 1 ± 0.15) of the ground at global [N, 2] points."""
    fine = _hash01(np.floor(xy[:, 0] / 0.2), np.floor(xy[:, 1] / 0.2), 1) - 0.5
    gx, gy = xy[:, 0] / 4.0, xy[:, 1] / 4.0
    ix, iy = np.floor(gx), np.floor(gy)
    fx, fy = (gx - ix).astype(np.float32), (gy - iy).astype(np.float32)
    c00, c10 = _hash01(ix, iy, 2), _hash01(ix + 1, iy, 2)
    c01, c11 = _hash01(ix, iy + 1, 2), _hash01(ix + 1, iy + 1, 2)
    coarse = (c00 * (1 - fx) + c10 * fx) * (1 - fy) + (c01 * (1 - fx) + c11 * fx) * fy - 0.5
    return 1.0 + 0.16 * fine + 0.2 * coarse


@dataclass
class RayHits:
    """Nearest hit of each ray.  ``t``: ray parameter (inf for none); ``kind``: 0 none, 1 ground,
    2 box; ``box``: box index (-1 unless kind 2); ``face``: hit box face axis 0/1/2 (x, y, z)."""

    t: np.ndarray
    kind: np.ndarray
    box: np.ndarray
    face: np.ndarray


def _slab(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry parameter [n] (inf for a miss) and entry face axis [n] of rays against one box."""
    inv = 1.0 / np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)  # axis-parallel rays: huge, finite slopes
    t1, t2 = (lo - origin) * inv, (hi - origin) * inv  # [n, 3]
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near, t_far = tmin.max(axis=1), tmax.min(axis=1)
    hit = (t_near <= t_far) & (t_near > 0)
    return np.where(hit, t_near, np.inf), tmin.argmax(axis=1).astype(np.uint8)


def cast_rays(origin: np.ndarray, dirs: np.ndarray, boxes: np.ndarray, max_t: float,
              box_rays: list[np.ndarray | None] | None = None) -> RayHits:
    """Intersect rays ``origin + t·dirs`` (global frame, [3] and [N, 3]) with z = 0 and ``boxes``.

    Args:
        boxes: [K, 6] (min xyz, max xyz); a ray starting inside a box does not hit it.
        max_t: hits with a larger ray parameter are dropped.
        box_rays: optional per box the indices of the rays that can hit it (``None`` = all);
            a pure speed-up for cameras, where a box covers a small part of the image.
    """
    n = len(dirs)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[:, 2] < -1e-9, -origin[2] / dirs[:, 2], np.inf)
    t = np.where(t_ground <= max_t, t_ground, np.inf)
    kind = np.where(np.isfinite(t), 1, 0).astype(np.uint8)
    box_index = np.full(n, -1, np.int64)
    face = np.zeros(n, np.uint8)
    reach = max_t * (float(np.sqrt((dirs ** 2).sum(axis=1).max())) if n else 0.0)
    for k, bx in enumerate(boxes):
        lo, hi = bx[:3], bx[3:]
        gap = np.maximum(np.maximum(lo - origin, origin - hi), 0.0)  # per-axis distance to the box
        if not gap.any() or float(np.linalg.norm(gap)) > reach:  # inside it, or out of reach
            continue
        rays = box_rays[k] if box_rays is not None else None
        if rays is not None and not len(rays):
            continue
        sub = dirs if rays is None else dirs[rays]
        t_box, f_box = _slab(origin, sub, lo, hi)
        current = t if rays is None else t[rays]
        closer = (t_box < current) & (t_box <= max_t)
        idx = np.nonzero(closer)[0] if rays is None else rays[closer]
        t[idx] = t_box[closer]
        kind[idx] = 2
        box_index[idx] = k
        face[idx] = f_box[closer]
    return RayHits(t=t, kind=kind, box=box_index, face=face)


def _camera_box_rays(boxes: np.ndarray, camera2global: np.ndarray, intrinsics: np.ndarray,
                     image_size: tuple[int, int], max_depth: float) -> list[np.ndarray | None]:
    """Per box, the flat pixel indices inside its projected bounding rectangle (conservative)."""
    h, w = image_size
    global2camera = np.linalg.inv(camera2global)
    out: list[np.ndarray | None] = []
    corner_sel = np.array([[i, j, k] for i in (0, 3) for j in (1, 4) for k in (2, 5)])  # [8, 3]
    for bx in boxes:
        corners = bx[corner_sel]  # [8, 3]
        cam = corners @ global2camera[:3, :3].T + global2camera[:3, 3]
        if np.all(cam[:, 2] <= 0.05) or np.min(np.linalg.norm(cam, axis=1)) > max_depth * 1.5:
            out.append(np.zeros(0, np.int64))
            continue
        if np.any(cam[:, 2] <= 0.05):  # straddles the image plane: test every pixel
            out.append(None)
            continue
        uv = cam[:, :2] / cam[:, 2:3] * np.diag(intrinsics)[:2] + intrinsics[:2, 2]
        c0, r0 = np.floor(uv.min(axis=0)).astype(int) - 1
        c1, r1 = np.ceil(uv.max(axis=0)).astype(int) + 1
        c0, c1, r0, r1 = max(c0, 0), min(c1, w), max(r0, 0), min(r1, h)
        if c0 >= c1 or r0 >= r1:
            out.append(np.zeros(0, np.int64))
            continue
        rows, cols = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
        out.append((rows * w + cols).ravel())
    return out


@dataclass
class CameraRender:
    """One rendered camera view.  ``rgb`` uint8 [H, W, 3]; ``label`` uint8 [H, W] seg class
    (:data:`SEG_CLASSES`); ``depth`` float32 [H, W] distance along the optical axis (m), 0 for sky."""

    rgb: np.ndarray
    label: np.ndarray
    depth: np.ndarray


def render_camera(town: Town, raster: SurfaceRaster, camera2global: np.ndarray, intrinsics: np.ndarray,
                  image_size: tuple[int, int], rng: np.random.Generator, max_depth: float = 250.0) -> CameraRender:
    """Render a pinhole camera (OpenCV frame) of ``image_size`` = (H, W) pixels."""
    h, w = image_size
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # pixel centres
    pix = np.stack([u.ravel(), v.ravel(), np.ones(h * w)], axis=1)  # [HW, 3]
    rays_cam = pix @ np.linalg.inv(intrinsics).T  # z = 1: the ray parameter is the depth
    dirs = rays_cam @ camera2global[:3, :3].T
    origin = camera2global[:3, 3]
    box_rays = _camera_box_rays(town.boxes, camera2global, intrinsics, image_size, max_depth)
    hits = cast_rays(origin, dirs, town.boxes, max_t=max_depth, box_rays=box_rays)
    points = origin + dirs * np.where(np.isfinite(hits.t), hits.t, 0.0)[:, None]

    rgb = np.zeros((h * w, 3), np.float32)
    label = np.full(h * w, SKY, np.uint8)
    ground = hits.kind == 1
    paint, ground_label = raster.lookup(points[ground, :2])
    rgb[ground] = PAINT_RGB[paint] * ground_texture(points[ground, :2])[:, None]
    label[ground] = ground_label
    boxed = hits.kind == 2
    if boxed.any():
        idx = hits.box[boxed]
        shade = np.array([0.78, 0.62, 1.0], np.float32)[hits.face[boxed]]
        stripes = 1.0 + 0.12 * (np.floor(points[boxed, 2] / 1.5) % 2)  # storeys
        rgb[boxed] = town.box_colours[idx].astype(np.float32) * (shade * stripes)[:, None]
        kinds = np.array([BUILDING if k == "building" else CAR for k in town.box_kinds], np.uint8)
        label[boxed] = kinds[idx]
    hit = hits.kind > 0
    distance = hits.t[hit] * np.linalg.norm(dirs[hit], axis=1)
    fog = (1.0 - np.exp(-distance / 220.0))[:, None].astype(np.float32)
    rgb[hit] = rgb[hit] * (1 - fog) + HAZE * fog
    sky = ~hit
    elevation = np.clip(dirs[sky, 2] / np.linalg.norm(dirs[sky], axis=1), 0.0, 1.0)[:, None]
    rgb[sky] = SKY_HORIZON * (1 - elevation) + SKY_ZENITH * elevation
    rgb += rng.normal(0.0, 2.5, size=rgb.shape).astype(np.float32)
    depth = np.where(hit, hits.t, 0.0).astype(np.float32)
    return CameraRender(
        rgb=np.clip(rgb, 0, 255).astype(np.uint8).reshape(h, w, 3),
        label=label.reshape(h, w),
        depth=depth.reshape(h, w),
    )


def scan_lidar(town: Town, raster: SurfaceRaster, lidar2global: np.ndarray, spec: LidarSpec, azimuth_steps: int,
               rng: np.random.Generator) -> np.ndarray:
    """One LiDAR sweep: float32 [N, 5] (x, y, z in the sensor frame (m), intensity 0–255, ring)."""
    dirs_lidar, ring = spec.directions(azimuth_steps)
    dirs = dirs_lidar @ lidar2global[:3, :3].T
    hits = cast_rays(lidar2global[:3, 3], dirs, town.boxes, max_t=spec.max_range)
    keep = hits.kind > 0
    rng_noise = rng.normal(0.0, 0.02, size=int(keep.sum()))
    distance = hits.t[keep] + rng_noise
    xyz = dirs_lidar[keep] * distance[:, None]
    intensity = np.zeros(int(keep.sum()), np.float32)
    kind = hits.kind[keep]
    world = lidar2global[:3, 3] + dirs[keep] * hits.t[keep][:, None]
    ground = kind == 1
    paint, _ = raster.lookup(world[ground, :2])
    intensity[ground] = PAINT_INTENSITY[paint]
    box_kind = np.array([BOX_INTENSITY[k] for k in town.box_kinds], np.float32)
    intensity[~ground] = box_kind[hits.box[keep][~ground]] if len(box_kind) else 0.0
    intensity = np.clip(intensity + rng.normal(0.0, 3.0, size=intensity.shape), 0.0, 255.0)
    return np.concatenate([xyz, intensity[:, None], ring[keep][:, None]], axis=1).astype(np.float32)
