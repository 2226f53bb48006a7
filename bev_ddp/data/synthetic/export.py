"""Export (image, semantic label, depth) pairs of a synthetic dataroot for the image tasks.

Layout written to ``out_dir``::

    images/<split>/<name>.jpg   the dataset's camera images (copied)
    labels/<split>/<name>.png   uint8 class ids (meta.json "classes"; 255 never occurs)
    depth/<split>/<name>.png    uint16 depth along the optical axis in millimetres, 0 = invalid
    meta.json                   classes, depth scale, split scenes, image size

Labels and depth come from the same ray casting that rendered the images.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from bev_ddp.data.geometry import record_to_matrix
from bev_ddp.data.splits import split_scenes
from bev_ddp.data.synthetic.render import SEG_CLASSES, render_camera
from bev_ddp.data.synthetic.world import build_scene, load_settings
from bev_ddp.errors import InputError
from bev_ddp.files import read_json

DEPTH_SCALE = 1000.0  # PNG value per metre
MAX_DEPTH_M = 65.535


def _table(dataroot: Path, version: str, name: str) -> list[dict]:
    path = dataroot / version / f"{name}.json"
    return read_json(path, what="nuScenes table")


def export_image_tasks(dataroot: str | Path, out_dir: str | Path) -> Path:
    """Write segmentation and depth pairs for every keyframe camera image of ``dataroot``."""
    dataroot, out_dir = Path(dataroot), Path(out_dir)
    settings = load_settings(dataroot)
    town, raster = build_scene(settings)
    tables = {n: {r["token"]: r for r in _table(dataroot, settings.version, n)}
              for n in ("sample_data", "sample", "scene", "calibrated_sensor", "ego_pose", "sensor")}
    split, source = split_scenes([s["name"] for s in tables["scene"].values()], settings.version)
    splits_of = {name: [s for s, names in split.items() if name in names] for names in split.values() for name in names}
    counts = {"train": 0, "val": 0}
    for record in sorted(tables["sample_data"].values(), key=lambda r: r["filename"]):
        if record["fileformat"] != "jpg" or not record["is_key_frame"]:
            continue
        calib = tables["calibrated_sensor"][record["calibrated_sensor_token"]]
        channel = tables["sensor"][calib["sensor_token"]]["channel"]
        scene = tables["scene"][tables["sample"][record["sample_token"]]["scene_token"]]["name"]
        camera2global = record_to_matrix(tables["ego_pose"][record["ego_pose_token"]]) @ record_to_matrix(calib)
        size = (record["height"], record["width"])
        render = render_camera(town, raster, camera2global, np.asarray(calib["camera_intrinsic"]), size,
                               np.random.default_rng(0))
        depth_mm = np.where((render.depth > 0) & (render.depth <= MAX_DEPTH_M), np.round(render.depth * DEPTH_SCALE), 0)
        name = f"{scene}_{channel}_{record['timestamp']}"
        for s in splits_of[scene]:  # a single-scene world is both train and val
            for sub, suffix in (("images", "jpg"), ("labels", "png"), ("depth", "png")):
                (out_dir / sub / s).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dataroot / record["filename"], out_dir / "images" / s / f"{name}.jpg")
            Image.fromarray(render.label).save(out_dir / "labels" / s / f"{name}.png")
            Image.fromarray(depth_mm.astype(np.uint16)).save(out_dir / "depth" / s / f"{name}.png")
            counts[s] += 1
    meta = {
        "classes": list(SEG_CLASSES),
        "ignore_index": 255,
        "depth_scale": DEPTH_SCALE,
        "depth_unit": "png value / depth_scale = metres along the optical axis; 0 = invalid (sky or > 65.5 m)",
        "max_depth": MAX_DEPTH_M,
        "split": split,
        "split_source": source,
        "counts": counts,
        "source": str(dataroot),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out_dir
