"""A very small synthetic world for tests of every area (a few seconds to generate)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from bev_ddp.data.synthetic.world import WorldSettings, generate_world, is_complete, load_settings

TINY = WorldSettings(seed=0, num_scenes=2, samples_per_scene=3, image_size=(96, 176), lidar_azimuth_steps=360,
                     town_size=240.0)


def tiny_world(tmp_dir: str | Path, *, samples_per_scene: int = TINY.samples_per_scene) -> Path:
    """Write (or reuse, when already there with the same settings) a tiny world under ``tmp_dir/synth``.

    Two scenes of ``samples_per_scene`` keyframes, 96×176 images, 360 LiDAR columns.
    """
    root = Path(tmp_dir) / "synth"
    settings = WorldSettings(**{**asdict(TINY), "samples_per_scene": samples_per_scene})
    if is_complete(root) and load_settings(root) == settings:
        return root
    return generate_world(root, num_scenes=settings.num_scenes, samples_per_scene=settings.samples_per_scene,
                          seed=settings.seed, image_size=settings.image_size,
                          lidar_azimuth_steps=settings.lidar_azimuth_steps, town_size=settings.town_size)
