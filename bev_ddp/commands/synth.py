"""``bev-ddp synth``: write a synthetic town in nuScenes format."""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from bev_ddp.data.bev_map import MAP_LOCATIONS
from bev_ddp.data.synthetic.world import WORLD_FILE
from bev_ddp.errors import InputError



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataroot to write (created if missing)")
    parser.add_argument("--scenes", type=int, default=2, help="number of scenes (one drive each)")
    parser.add_argument("--samples-per-scene", type=int, default=10, help="keyframes per scene (2 Hz)")
    parser.add_argument("--seed", type=int, default=0, help="master seed: same seed, same files")
    parser.add_argument("--image-size", type=int, nargs=2, default=(225, 400), metavar=("H", "W"),
                        help="camera image size; intrinsics are scaled to it (nuScenes is 900 1600)")
    parser.add_argument("--location", default="singapore-onenorth", choices=MAP_LOCATIONS,
                        help="map name to write the town under")
    parser.add_argument("--lidar-columns", type=int, default=720, help="LiDAR azimuth steps per revolution")
    parser.add_argument("--camera-every", type=int, default=0, metavar="K",
                        help="also render the cameras at every K-th LiDAR frame between keyframes (K=2: 10 Hz, "
                             "for replay); 0 = keyframes only (default)")
    parser.add_argument("--export-image-tasks", metavar="DIR", default=None,
                        help="also write (image, label, depth) pairs for the seg/depth tasks to DIR")


def run(args: argparse.Namespace) -> int:
    from bev_ddp.data.synthetic import export_image_tasks, generate_world

    start = time.perf_counter()
    out = Path(args.out)
    if (out / "v1.0-mini").exists() and not (out / WORLD_FILE).is_file():  # never replace a real dataset
        raise InputError(f"refusing to write a synthetic world over {out}: it holds a v1.0-mini dataset "
                         "that this generator did not write")
    staging = out.with_name(f".{out.name}.partial")  # a signal or a full disk leaves no half-written dataroot
    shutil.rmtree(staging, ignore_errors=True)
    try:
        generate_world(staging, num_scenes=args.scenes, samples_per_scene=args.samples_per_scene, seed=args.seed,
                       image_size=tuple(args.image_size), location=args.location,
                       lidar_azimuth_steps=args.lidar_columns, camera_every=args.camera_every)
        root = _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"wrote {args.scenes} scenes x {args.samples_per_scene} keyframes to {root} "
          f"in {time.perf_counter() - start:.1f} s")
    if args.export_image_tasks:
        out = export_image_tasks(root, args.export_image_tasks)
        print(f"wrote image-task pairs to {out}")
    return 0


def _replace_folder(new: Path, target: Path) -> Path:
    """Move the finished entries of ``new`` into ``target``; entries it does not write (e.g. ``infos/``) stay."""
    if not target.exists():
        new.rename(target)
        return target
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir()
    for entry in sorted(new.iterdir()):
        if (target / entry.name).exists():
            (target / entry.name).rename(old / entry.name)
        entry.rename(target / entry.name)
    shutil.rmtree(old, ignore_errors=True)
    new.rmdir()
    return target
