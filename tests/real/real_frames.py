"""Paths and small builders over the real frames in ``../shared/real`` (never copied here).

The frames are public test fixtures of mmdetection3d, nuscenes-devkit and mmsegmentation (see that
folder's README).  Tests call :func:`real_path`, which skips with the reason printed when the
folder is absent.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REAL_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "real"
KEYFRAME_PKL = "nuscenes_keyframe/n015-2018-07-24-11-22-45+0800.pkl"
DRIVABLE_GEOJSON = "nuscenes_map/singapore-onenorth_drivable_area.geojson"


def real_path(relative: str) -> Path:
    """``../shared/real/<relative>``; skips the test (reason printed) when it is absent."""
    path = REAL_ROOT / relative
    if not path.exists():
        reason = f"real frames absent: {path} not found (see ../shared/real/README.md)"
        print(reason)
        pytest.skip(reason)
    return path


def trusted_pickle(path: Path):
    """Plain ``pickle.load`` of a fixture from ``../shared/real`` (the test's oracle, not our reader)."""
    with path.open("rb") as fh:
        return pickle.load(fh)  # noqa: S301 - fixed public test data


def drivable_polygons() -> list:
    """The real drivable-area polygons of singapore-onenorth, global map metres."""
    from shapely.geometry import shape

    geom = shape(json.loads(real_path(DRIVABLE_GEOJSON).read_text()))
    return list(getattr(geom, "geoms", [geom]))


def write_drivable_map(dataroot: Path, location: str = "singapore-onenorth") -> Path:
    """``dataroot/maps/expansion/<location>.json`` holding only the real drivable-area layer."""
    from bev_ddp.data.synthetic.map_expansion import town_to_map_json

    parts = drivable_polygons()
    bounds = np.array([p.bounds for p in parts])
    town = SimpleNamespace(drivable_parts=parts, ped_crossings=[], stop_lines=[], lane_dividers=[], walkways=[],
                           carparks=[], road_dividers=[],
                           bounds=(0.0, 0.0, float(bounds[:, 2].max()), float(bounds[:, 3].max())))
    path = dataroot / "maps" / "expansion" / f"{location}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(town_to_map_json(town, salt="real-drivable")))
    return path


def keyframe_lidar2global() -> np.ndarray:
    """[4, 4] LiDAR → global of the real keyframe, from mmdet3d's own info file."""
    info = trusted_pickle(real_path(KEYFRAME_PKL))["data_list"][0]
    return np.asarray(info["ego2global"]) @ np.asarray(info["lidar_points"]["lidar2ego"])


def keyframe_dataroot(root: Path) -> tuple[Path, Path]:
    """A dataroot at ``root`` that links the real keyframe's files (flat, as ../shared keeps them)
    and holds the real drivable-area map; its info file imported from mmdet3d's pickle by
    ``bev-ddp prepare --from-infos``.  Returns (dataroot, info file)."""
    from bev_ddp.cli import main

    folder = real_path("nuscenes_keyframe")
    root.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.suffix != ".pkl":
            (root / f.name).symlink_to(f)
    write_drivable_map(root)
    pkl = real_path(KEYFRAME_PKL)
    assert main(["prepare", "--from-infos", str(pkl), "--dataroot", str(root), "--location", "singapore-onenorth"]) == 0
    return root, root / "infos" / f"bev_ddp_infos_{pkl.stem}.json"
