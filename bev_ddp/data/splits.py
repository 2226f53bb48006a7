"""Train/val scene splits: the official nuScenes splits, or a deterministic one for other data."""
from __future__ import annotations

from nuscenes.utils.splits import create_splits_scenes

OFFICIAL = {"v1.0-mini": ("mini_train", "mini_val"), "v1.0-trainval": ("train", "val")}
VAL_FRACTION = 0.25


def split_scenes(scene_names: list[str], version: str) -> tuple[dict[str, list[str]], str]:
    """Assign scenes to ``train`` and ``val``.

    Returns the split and its source: ``"official"`` when every scene is in the devkit's split
    lists for ``version``; otherwise ``"deterministic"``: scenes sorted by name, the last
    ``max(1, round(n · 0.25))`` are val (with a single scene, train and val both hold it).
    """
    names = sorted(set(scene_names))
    if version in OFFICIAL:
        official = create_splits_scenes()
        train_name, val_name = OFFICIAL[version]
        train = [n for n in names if n in set(official[train_name])]
        val = [n for n in names if n in set(official[val_name])]
        if names and len(train) + len(val) == len(names):
            return {"train": train, "val": val}, "official"
    if len(names) <= 1:
        return {"train": list(names), "val": list(names)}, "deterministic"
    n_val = max(1, int(round(len(names) * VAL_FRACTION)))
    return {"train": names[:-n_val], "val": names[-n_val:]}, "deterministic"
