"""One tiny synthetic world per test session, shared by the data tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bev_ddp.data.synthetic import tiny_world
from bev_ddp.data.create_infos import create_infos


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    return tiny_world(tmp_path_factory.mktemp("data_world"))


@pytest.fixture(scope="session")
def infos(world: Path, tmp_path_factory) -> dict[str, Path]:
    return create_infos(world, "v1.0-mini", tmp_path_factory.mktemp("data_infos"))


@pytest.fixture
def scratch_root(world: Path, tmp_path: Path) -> Path:
    """A dataroot that links the world's folders and can hold broken files of a test."""
    root = tmp_path / "root"
    root.mkdir()
    for name in ("maps", "samples", "sweeps", "v1.0-mini"):
        (root / name).symlink_to(world / name, target_is_directory=True)
    (root / "broken").mkdir()
    return root


@pytest.fixture(scope="session")
def walkway_points(world: Path) -> np.ndarray:
    """[4000, 2] random global points at least 0.4 m inside the world's walkway polygons."""
    from shapely.geometry import Point

    from bev_ddp.data.bev_map import load_map

    nusc_map = load_map(world, "singapore-onenorth")
    polys = [nusc_map.extract_polygon(r["polygon_token"]).buffer(-0.4) for r in nusc_map.walkway]
    rng = np.random.default_rng(0)
    out = []
    while len(out) < 4000:
        poly = polys[int(rng.integers(len(polys)))]
        minx, miny, maxx, maxy = poly.bounds
        p = (rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if poly.contains(Point(p)):
            out.append(p)
    return np.array(out)
