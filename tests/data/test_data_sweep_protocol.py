"""``sweep_protocol: bevfusion``: BEVFusion's random sweep choice (also at test) and square near-point removal."""
from __future__ import annotations

import numpy as np

from bev_ddp.data.infos import read_infos
from bev_ddp.data.nuscenes import NuScenesBEVDataset


def _lags(dataset: NuScenesBEVDataset, index: int) -> set[float]:
    points = dataset[index]["points"].numpy()
    return {round(float(v), 4) for v in np.unique(points[:, 4]) if v > 0}


def test_bevfusion_sweeps_are_a_seeded_random_choice_at_evaluation(infos, world):
    info = read_infos(infos["train"])[1][1]
    all_lags = [round(float(s["time_lag"]), 4) for s in info["sweeps"]]
    assert len(all_lags) == 10
    newest = NuScenesBEVDataset(infos["train"], world, image_size=(64, 96), load_sweeps=3)
    assert _lags(newest, 1) == set(all_lags[:2])
    chosen = []
    for seed in range(4):
        ds = NuScenesBEVDataset(infos["train"], world, image_size=(64, 96), load_sweeps=3, sweep_protocol="bevfusion",
                                seed=seed)
        lags = _lags(ds, 1)
        assert len(lags) == 2 and lags <= set(all_lags)
        assert _lags(ds, 1) == lags  # deterministic for one seed
        chosen.append(frozenset(lags))
    assert len(set(chosen)) > 1  # not always the newest two


def test_bevfusion_near_point_removal_is_a_square(infos, world):
    xy = np.array([[0.9, 0.9], [0.5, 0.0], [1.2, 0.1], [0.0, -0.99]])
    square = NuScenesBEVDataset(infos["train"], world, image_size=(64, 96), sweep_protocol="bevfusion")
    circle = NuScenesBEVDataset(infos["train"], world, image_size=(64, 96))
    assert square._near_sensor(xy).tolist() == [True, True, False, True]
    assert circle._near_sensor(xy).tolist() == [False, True, False, True]
