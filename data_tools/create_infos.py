"""Script: write bev_ddp info files for a nuScenes dataroot (same options as ``bev-ddp prepare``).

A thin wrapper over the library (:func:`bev_ddp.data.create_infos.create_infos`, run through the
``prepare`` command so errors end with one line and exit code 2)::

    python data_tools/create_infos.py --dataroot data/nuscenes --version v1.0-trainval
"""
from __future__ import annotations

import sys

from bev_ddp.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["prepare", *sys.argv[1:]]))
