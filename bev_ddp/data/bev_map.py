"""BEV map labels rasterised with the nuScenes map expansion (``NuScenesMap.get_map_mask``).

Six classes (DESIGN "Map labels and evaluation"): drivable_area, ped_crossing, walkway, stop_line,
carpark_area and divider (= road_divider ∪ lane_divider).  The label grid covers
``xbound × ybound`` of the (augmented) lidar frame — 100 m × 100 m at 0.5 m by default — and is
indexed ``[C, X, Y]``: row ``i`` is lidar ``x = xmin + (i + 0.5)·dx``, column ``j`` is
``y = ymin + (j + 0.5)·dy``.

Labels follow the BEV augmentation exactly: the map is queried for the patch of the world that the
augmented grid sees (centre, size and angle moved by the inverse augmentation), so rotation, scale
and translation never resample a label image; a flip reverses grid columns or rows, which is exact
because the grid is symmetric about the lidar origin.

``mode="centres"`` labels are drawn at cell centres: a cell belongs to a polygon class iff its
centre lies inside the class's polygons (holes and multi-part polygons exact), and to a line class
(divider) iff its centre lies within :data:`LINE_HALF_WIDTH_CELLS` of a line
(:mod:`bev_ddp.data.cell_raster`).  The devkit's mask drawing (``cv2.fillPoly``, which fills every
cell an outline touches, and iterates shapely multi-part geometries directly, which shapely ≥ 2
forbids) is replaced by :class:`MapExplorer`'s two drawing methods; it also answers patch queries
from a spatial index.

``rasterize_map(..., mode="bevfusion")`` draws the ground truth the way BEVFusion's
``LoadBEVSegmentation`` does, for figures comparable with published ones: the devkit's own
drawing (polygon vertices rounded, line vertices truncated, lines 2 px thick; pixel ``j`` at
``0.5·j − 50`` m rather than at the cell centre), a fixed 100 m patch that ignores the BEV scale
augmentation, and only the shapely ≥ 2 ``.geoms`` fix.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from nuscenes.map_expansion import map_api
from nuscenes.map_expansion.map_api import NuScenesMap, NuScenesMapExplorer
import shapely
from shapely import STRtree, affinity
from shapely.geometry import MultiPolygon

from bev_ddp.data.cell_raster import fill_polygons_at_centres, mark_lines_near_centres
from bev_ddp.data.geometry import Bound, heading_yaw
from bev_ddp.errors import InputError

MAP_CLASSES: tuple[str, ...] = (
    "drivable_area",
    "ped_crossing",
    "walkway",
    "stop_line",
    "carpark_area",
    "divider",
)

# class -> map-expansion layers whose union forms it
CLASS_LAYERS: dict[str, tuple[str, ...]] = {
    "drivable_area": ("drivable_area",),
    "ped_crossing": ("ped_crossing",),
    "walkway": ("walkway",),
    "stop_line": ("stop_line",),
    "carpark_area": ("carpark_area",),
    "divider": ("road_divider", "lane_divider"),
}

MAP_LOCATIONS: tuple[str, ...] = tuple(map_api.locations)

MAP_RASTER_MODES = ("centres", "bevfusion")
LINE_HALF_WIDTH_CELLS = 1.0  # centres mode: a line marks the cells whose centre lies this close (2 cells wide)


def _parts(geom, kinds: tuple[str, ...]) -> list:
    """Non-empty simple parts of ``kinds`` in a (possibly nested) shapely geometry or a list of them."""
    out, stack = [], list(geom) if isinstance(geom, (list, tuple)) else [geom]
    while stack:
        g = stack.pop()
        if g is None or g.is_empty:
            continue
        if g.geom_type in kinds:
            out.append(g)
        elif hasattr(g, "geoms"):
            stack.extend(g.geoms)
    return out


class MapExplorer(NuScenesMapExplorer):
    """Devkit explorer that draws masks at cell centres (:mod:`bev_ddp.data.cell_raster`): one
    vectorised call per layer, shapely 2 multi-part geometries included.

    It also answers the per-layer patch queries from a spatial index (a shapely ``STRtree`` of
    each layer's geometry, built on first use) instead of intersecting every record of the map
    with the patch; the geometry handed to the mask drawing is the same (``use_index=False``
    restores the devkit's scan).
    """

    def __init__(self, map_api: NuScenesMap, *, use_index: bool = True) -> None:
        super().__init__(map_api)
        self.use_index = use_index
        self._index: dict[str, tuple[list, STRtree]] = {}

    def _layer_geometry(self, layer_name: str) -> tuple[list, STRtree]:
        """Geometries of a layer as the devkit's patch queries see them, and their index."""
        if layer_name not in self._index:
            records = getattr(self.map_api, layer_name)
            if layer_name == "drivable_area":
                geoms = [self.map_api.extract_polygon(t) for r in records for t in r["polygon_tokens"]]
            elif layer_name in self.map_api.non_geometric_polygon_layers:
                geoms = [self.map_api.extract_polygon(r["polygon_token"]) for r in records]
                geoms = [g for g in geoms if g.is_valid]  # the devkit skips invalid polygons here
            else:
                geoms = [self.map_api.extract_line(r["line_token"]) for r in records]
                geoms = [g for g in geoms if not g.is_empty]
            self._index[layer_name] = (geoms, STRtree(geoms))
        return self._index[layer_name]

    def _query(self, patch_box, patch_angle: float, layer_name: str, polygons: bool) -> list:
        geoms, tree = self._layer_geometry(layer_name)
        patch_x, patch_y = patch_box[0], patch_box[1]
        patch = self.get_patch_coord(patch_box, patch_angle)
        out = []
        for i in sorted(int(k) for k in tree.query(patch)):  # record order, as the devkit
            part = geoms[i].intersection(patch)
            if part.is_empty:
                continue
            part = affinity.rotate(part, -patch_angle, origin=(patch_x, patch_y), use_radians=False)
            part = affinity.affine_transform(part, [1.0, 0.0, 0.0, 1.0, -patch_x, -patch_y])
            if polygons and part.geom_type == "Polygon":
                part = MultiPolygon([part])
            out.append(part)
        return out

    def _get_layer_polygon(self, patch_box, patch_angle, layer_name):
        if not self.use_index or layer_name not in self.map_api.non_geometric_polygon_layers:
            return super()._get_layer_polygon(patch_box, patch_angle, layer_name)
        return self._query(patch_box, patch_angle, layer_name, polygons=True)

    def _get_layer_line(self, patch_box, patch_angle, layer_name):
        if not self.use_index or layer_name not in ("road_divider", "lane_divider"):
            return super()._get_layer_line(patch_box, patch_angle, layer_name)
        return self._query(patch_box, patch_angle, layer_name, polygons=False)

    @staticmethod
    def _to_canvas(layer_geom: Sequence, local_box, canvas_size: tuple[int, int]) -> list:
        """Patch-frame geometries (metres, patch centre at ``local_box``'s centre) → canvas cells.

        One vectorised transform for the whole layer, as the devkit's per-record
        ``affine_transform`` + ``scale`` (pixel edges at integers, x along columns).  No clipping
        to the patch: the patch queries already clipped, and the cell tests are exact either way.
        """
        patch_x, patch_y, patch_h, patch_w = local_box
        offset = np.array([-patch_x + patch_w / 2.0, -patch_y + patch_h / 2.0])
        scale = np.array([canvas_size[1] / patch_w, canvas_size[0] / patch_h])
        return list(shapely.transform(np.asarray(list(layer_geom), dtype=object), lambda xy: (xy + offset) * scale))

    def _polygon_geom_to_mask(self, layer_geom, local_box, layer_name, canvas_size) -> np.ndarray:
        if layer_name not in self.map_api.non_geometric_polygon_layers:
            raise ValueError(f"{layer_name} is not a polygonal layer")
        mask = np.zeros(canvas_size, np.uint8)
        return self.mask_for_polygons(self._to_canvas(layer_geom, local_box, canvas_size), mask)

    def _line_geom_to_mask(self, layer_geom, local_box, layer_name, canvas_size) -> np.ndarray | None:
        if layer_name not in self.map_api.non_geometric_line_layers:
            raise ValueError(f"{layer_name} is not a line layer")
        if layer_name == "traffic_light":
            return None  # as the devkit
        mask = np.zeros(canvas_size, np.uint8)
        return self.mask_for_lines(self._to_canvas(layer_geom, local_box, canvas_size), mask)

    @staticmethod
    def mask_for_polygons(polygons, mask: np.ndarray) -> np.ndarray:  # noqa: D401 - devkit signature
        return fill_polygons_at_centres(_parts(polygons, ("Polygon",)), mask)

    @staticmethod
    def mask_for_lines(lines, mask: np.ndarray) -> np.ndarray:  # noqa: D401 - devkit signature
        return mark_lines_near_centres(_parts(lines, ("LineString", "LinearRing")), mask, LINE_HALF_WIDTH_CELLS)


class DevkitDrawingExplorer(NuScenesMapExplorer):
    """The devkit's explorer (patch queries and mask drawing) with only the shapely ≥ 2 fix:
    lines are handed to the devkit's ``mask_for_lines`` one ``LineString`` at a time (it iterates
    a ``MultiLineString`` directly).  BEVFusion's labels; slower than :class:`MapExplorer`."""

    @staticmethod
    def mask_for_lines(lines, mask: np.ndarray) -> np.ndarray:  # noqa: D401 - devkit signature
        for part in _parts(lines, ("LineString", "LinearRing")):
            NuScenesMapExplorer.mask_for_lines(part, mask)
        return mask


def load_map(dataroot: str | Path, location: str) -> NuScenesMap:
    """Load ``dataroot/maps/expansion/<location>.json`` with the devkit, ready for shapely 2.

    Raises:
        InputError: naming the location or file when the location is unknown to the devkit, the
            file is missing, is not valid JSON, or lacks a layer the devkit needs.
    """
    path = Path(dataroot) / "maps" / "expansion" / f"{location}.json"
    if location not in MAP_LOCATIONS:
        raise InputError(f"unknown map location {location!r} (map file {path}); known: {', '.join(MAP_LOCATIONS)}")
    if not path.is_file():
        raise InputError(f"map expansion file not found for location {location!r}: {path}")
    try:
        nusc_map = NuScenesMap(dataroot=str(dataroot), map_name=location)
    except json.JSONDecodeError as exc:
        raise InputError(f"map expansion file {path} is not valid JSON: {exc}") from exc
    except (KeyError, TypeError, IndexError) as exc:
        raise InputError(f"map expansion file {path} is malformed: missing or bad entry {exc}") from exc
    nusc_map.explorer = MapExplorer(nusc_map)
    return nusc_map


def grid_shape(xbound: Sequence[float], ybound: Sequence[float]) -> tuple[int, int]:
    """(X, Y) number of cells of a BEV grid given ``(min, max, step)`` bounds in metres."""
    return Bound.of(xbound).cells, Bound.of(ybound).cells


def _split_flip(aug2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 2×2 linear map M into ``F @ S`` with F a y-flip (or identity) and det(S) > 0."""
    if np.linalg.det(aug2d) > 0:
        return np.eye(2), aug2d
    flip = np.diag([1.0, -1.0])
    return flip, flip @ aug2d


def rasterize_map(
    nusc_map: NuScenesMap,
    lidar2global: np.ndarray,
    *,
    classes: Sequence[str] = MAP_CLASSES,
    xbound: Sequence[float] = (-50.0, 50.0, 0.5),
    ybound: Sequence[float] = (-50.0, 50.0, 0.5),
    lidar_aug: np.ndarray | None = None,
    mode: str = "centres",
) -> np.ndarray:
    """Rasterise map classes around the lidar, in the augmented lidar frame.

    Args:
        nusc_map: map of the sample's location (see :func:`load_map`).
        lidar2global: [4, 4] lidar → global transform at the keyframe.
        classes: class names, each a key of :data:`CLASS_LAYERS`.
        xbound, ybound: ``(min, max, step)`` of the grid in metres (augmented lidar frame).
        lidar_aug: [4, 4] BEV augmentation, lidar → augmented lidar (rotation about z, uniform
            scale, flips, translation); identity when ``None``.
        mode: ``"centres"`` (ours) or ``"bevfusion"`` (the devkit's drawing as BEVFusion's
            loader calls it; see the module docstring).

    Returns:
        bool [C, X, Y] masks.
    """
    unknown = [c for c in classes if c not in CLASS_LAYERS]
    if unknown:
        raise InputError(f"unknown map classes {unknown}; choose from {list(CLASS_LAYERS)}")
    if mode not in MAP_RASTER_MODES:
        raise InputError(f"map raster mode must be one of {MAP_RASTER_MODES}, got {mode!r}")
    if mode == "bevfusion":
        return _rasterize_bevfusion(nusc_map, lidar2global, classes, xbound, ybound, lidar_aug)
    aug = np.eye(4) if lidar_aug is None else np.asarray(lidar_aug, dtype=np.float64)
    flip, similarity = _split_flip(aug[:2, :2])
    scale = float(np.sqrt(abs(np.linalg.det(similarity))))
    if scale <= 0 or not np.isfinite(scale):
        raise InputError(f"BEV augmentation is degenerate: {aug[:2, :2].tolist()}")
    translation = flip @ aug[:2, 3]
    flipped = not np.allclose(flip, np.eye(2))
    if flipped and not np.isclose(ybound[0], -ybound[1]):
        raise InputError("a flipped BEV augmentation needs a y grid symmetric about 0")

    # pre-flip grid frame g = S·p + t: its centre and x axis in lidar coordinates
    centre_g = np.array([(xbound[0] + xbound[1]) / 2.0, (ybound[0] + ybound[1]) / 2.0])
    inv = np.linalg.inv(similarity)
    centre_lidar = inv @ (centre_g - translation)
    axis_lidar = inv @ np.array([1.0, 0.0])
    frame = np.eye(4)
    frame[:2, :2] = np.array([[axis_lidar[0], -axis_lidar[1]], [axis_lidar[1], axis_lidar[0]]]) * scale
    frame[:2, 3] = centre_lidar
    patch2global = np.asarray(lidar2global, dtype=np.float64) @ frame
    centre_global = patch2global[:2, 3]
    angle_deg = np.degrees(heading_yaw(patch2global))

    patch_w = (xbound[1] - xbound[0]) / scale  # along the grid x axis
    patch_h = (ybound[1] - ybound[0]) / scale
    nx, ny = grid_shape(xbound, ybound)
    layers = sorted({layer for c in classes for layer in CLASS_LAYERS[c]})
    masks = nusc_map.get_map_mask(
        patch_box=(float(centre_global[0]), float(centre_global[1]), patch_h, patch_w),
        patch_angle=float(angle_deg),
        layer_names=layers,
        canvas_size=(ny, nx),
    )  # [L, Y, X]
    out = _classes_from_layers(masks, layers, classes)
    if flipped:
        out = out[:, :, ::-1]  # y → -y
    return np.ascontiguousarray(out)


def _classes_from_layers(masks: np.ndarray, layers: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Devkit masks [L, Y, X] of ``layers`` → bool [C, X, Y] class masks (union of each class's layers)."""
    by_layer = dict(zip(layers, masks.astype(bool).transpose(0, 2, 1)))  # each [X, Y]
    return np.stack([np.logical_or.reduce([by_layer[layer] for layer in CLASS_LAYERS[c]]) for c in classes])


def _rasterize_bevfusion(nusc_map: NuScenesMap, lidar2global: np.ndarray, classes: Sequence[str],
                         xbound: Sequence[float], ybound: Sequence[float], lidar_aug: np.ndarray | None) -> np.ndarray:
    """``mode="bevfusion"`` of :func:`rasterize_map`: as BEVFusion's ``LoadBEVSegmentation``.

    The patch is centred at the augmented lidar origin and turned by the yaw of its x axis; its
    size is the grid's extent whatever the augmentation's scale.  A flip in ``lidar_aug`` is
    applied to the finished masks (BEVFusion flips after drawing).
    """
    aug = np.eye(4) if lidar_aug is None else np.asarray(lidar_aug, dtype=np.float64)
    flip, similarity = _split_flip(aug[:2, :2])
    unflipped = aug.copy()
    unflipped[:2, :2], unflipped[:2, 3] = similarity, flip @ aug[:2, 3]
    pose = np.asarray(lidar2global, dtype=np.float64) @ np.linalg.inv(unflipped)  # augmented lidar -> global
    x_axis = pose[:3, :3] @ np.array([1.0, 0.0, 0.0])
    patch_h, patch_w = ybound[1] - ybound[0], xbound[1] - xbound[0]
    layers = sorted({layer for c in classes for layer in CLASS_LAYERS[c]})
    explorer = getattr(nusc_map, "devkit_explorer", None)
    if explorer is None:
        explorer = nusc_map.devkit_explorer = DevkitDrawingExplorer(nusc_map)
    masks = explorer.get_map_mask(
        patch_box=(float(pose[0, 3]), float(pose[1, 3]), patch_h, patch_w),
        patch_angle=float(np.arctan2(x_axis[1], x_axis[0]) / np.pi * 180),  # as their loader (bit for bit)
        layer_names=layers,
        canvas_size=(int(patch_h / ybound[2]), int(patch_w / xbound[2])),
    )  # [L, Y, X]
    out = _classes_from_layers(masks, layers, classes)
    if not np.allclose(flip, np.eye(2)):
        out = out[:, :, ::-1]  # y → -y
    return np.ascontiguousarray(out)
