"""Train or test a ``configs/mmdet3d/`` config with mmengine's Runner (needs the mmdet3d extra).

    python tools/mmdet3d_run.py train configs/mmdet3d/synth_tiny_fusion_ddp.py --data-root data/synth
    python tools/mmdet3d_run.py test configs/mmdet3d/synth_tiny_fusion_ddp.py --data-root data/synth \
        --checkpoint work_dirs/mmdet3d_synth_tiny_fusion_ddp/iter_600.pth

``--cfg-options key=value ...`` sets dotted config keys (mmengine's ``DictAction``).  Exit 2 with one
line on bad input.
"""
from __future__ import annotations

import argparse
import sys

from mmengine.config import DictAction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("train", "test"))
    parser.add_argument("config")
    parser.add_argument("--data-root", default=None, help="dataroot of the world (info files in DATA_ROOT/infos)")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--checkpoint", default=None, help="mmengine checkpoint to test (test mode)")
    parser.add_argument("--bev-config", default=None, help="bev_ddp YAML config instead of the file's bev_ddp_config")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default=None)
    args = parser.parse_args(argv)

    from mmengine.runner import Runner

    from bev_ddp.errors import ConfigError, InputError
    from bev_ddp.integrations.mmdet3d.runner import load_runner_config

    try:
        cfg = load_runner_config(args.config, data_root=args.data_root, work_dir=args.work_dir,
                                 bev_config=args.bev_config, options=args.cfg_options)
        if args.checkpoint:
            cfg.load_from = args.checkpoint
        runner = Runner.from_cfg(cfg)
        runner.train() if args.mode == "train" else runner.test()
    except (InputError, ConfigError) as exc:
        print(f"mmdet3d_run: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
