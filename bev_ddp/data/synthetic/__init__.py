"""A procedurally generated town written in nuScenes format, for demos and tests.

``generate_world(out_dir, num_scenes, ...)`` writes the dataset; ``tiny_world(tmp_dir)`` writes a
very small one for tests; ``export_image_tasks(dataroot, out_dir)`` writes (image, semantic label,
depth) pairs for the image segmentation and depth subpackages.
"""
from bev_ddp.data.synthetic.world import WorldSettings, generate_world, load_settings
from bev_ddp.data.synthetic.tiny import tiny_world
from bev_ddp.data.synthetic.export import export_image_tasks

__all__ = ["WorldSettings", "generate_world", "load_settings", "tiny_world", "export_image_tasks"]
