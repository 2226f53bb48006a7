"""``bev-ddp prepare``: build JSON info files from a nuScenes dataroot."""
from __future__ import annotations

import argparse
from pathlib import Path



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", required=True, help="nuScenes dataroot (holds the version folder)")
    parser.add_argument("--version", default="v1.0-trainval", choices=("v1.0-trainval", "v1.0-mini"),
                        help="table folder to read")
    parser.add_argument("--out", default=None, help="output folder (default: DATAROOT/infos)")
    parser.add_argument("--max-sweeps", type=int, default=10, help="previous LiDAR frames stored per keyframe")
    parser.add_argument("--from-pkl", nargs="+", default=None, metavar="PKL",
                        help="convert BEVFusion .pkl infos instead of reading the tables (needs --allow-pickle)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow unpickling --from-pkl files (pickle runs code: trusted files only)")
    parser.add_argument("--to-mmdet3d", action="store_true",
                        help="also write mmdet3d 1.x info files (mmdet3d_infos_<split>.pkl) for configs/mmdet3d/")


def run(args: argparse.Namespace) -> int:
    from bev_ddp.data.infos import INFO_FORMAT, read_bevfusion_pkl, write_infos
    from bev_ddp.data.create_infos import create_infos

    out = Path(args.out) if args.out else Path(args.dataroot) / "infos"
    if args.from_pkl:
        for pkl in args.from_pkl:
            infos = read_bevfusion_pkl(pkl, args.dataroot, allow_pickle=args.allow_pickle)
            path = write_infos(out / (Path(pkl).stem + ".json"),
                               {"format": INFO_FORMAT, "version": args.version, "converted_from": str(pkl)}, infos)
            print(f"{path}: {len(infos)} keyframes")
        return 0
    paths = create_infos(args.dataroot, args.version, out, max_sweeps=args.max_sweeps)
    for split, path in paths.items():
        print(f"{split}: {path}")
        if args.to_mmdet3d:
            from bev_ddp.data.infos import read_infos
            from bev_ddp.data.mmdet3d_infos import write_mmdet3d_infos

            metadata, infos = read_infos(path)
            print(f"{split}: {write_mmdet3d_infos(out / f'mmdet3d_infos_{split}.pkl', metadata, infos)}")
    return 0
