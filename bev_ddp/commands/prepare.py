"""``bev-ddp prepare``: build JSON info files from a nuScenes dataroot, or import mmdet3d / BEVFusion infos."""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_VERSION = "v1.0-trainval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", required=True, help="nuScenes dataroot (holds the version folder)")
    parser.add_argument("--version", default=None, choices=("v1.0-trainval", "v1.0-mini"),
                        help=f"table folder to read (default {DEFAULT_VERSION}; with --from-infos: any found, "
                             "for map locations only)")
    parser.add_argument("--out", default=None, help="output folder (default: DATAROOT/infos)")
    parser.add_argument("--max-sweeps", type=int, default=10, help="previous LiDAR frames stored per keyframe")
    parser.add_argument("--from-infos", "--from-pkl", dest="from_infos", nargs="+", default=None, metavar="PKL",
                        help="import mmdet3d (1.x or 0.x) / BEVFusion nuscenes_infos_*.pkl instead of reading the "
                             "tables; read without running code (plain containers and numpy arrays only)")
    parser.add_argument("--location", default=None,
                        help="map location for --from-infos records when neither the pickle nor the tables name one")
    parser.add_argument("--allow-pickle", action="store_true", help=argparse.SUPPRESS)  # no longer needed
    parser.add_argument("--to-mmdet3d", action="store_true",
                        help="also write mmdet3d 1.x info files (mmdet3d_infos_<split>.pkl) for configs/mmdet3d/")


def run(args: argparse.Namespace) -> int:
    from bev_ddp.output_files import probe_output_dir

    out = Path(args.out) if args.out else Path(args.dataroot) / "infos"
    if args.from_infos:
        return _import(args, probe_output_dir(out, what="info folder"))
    from bev_ddp.data.create_infos import create_infos

    paths = create_infos(args.dataroot, args.version or DEFAULT_VERSION, out, max_sweeps=args.max_sweeps)
    for split, path in paths.items():
        print(f"{split}: {path}")
        if args.to_mmdet3d:
            from bev_ddp.data.infos import read_infos
            from bev_ddp.data.mmdet3d_infos import write_mmdet3d_infos

            metadata, infos = read_infos(path)
            print(f"{split}: {write_mmdet3d_infos(out / f'mmdet3d_infos_{split}.pkl', metadata, infos)}")
    return 0


def _import(args: argparse.Namespace, out: Path) -> int:
    from bev_ddp.data.info_import import import_info_pickle, imported_info_name
    from bev_ddp.data.infos import write_infos

    for pkl in args.from_infos:
        imported = import_info_pickle(pkl, args.dataroot, location=args.location, version=args.version)
        path = write_infos(out / imported_info_name(pkl), imported.metadata, imported.infos)
        sweeps = sum(len(i["sweeps"]) for i in imported.infos)
        print(f"{path}: {len(imported.infos)} keyframes, {sweeps} sweeps ({imported.metadata['source_layout']} layout)")
        if imported.missing_files:
            print(f"warning: {len(imported.missing_files)} files of {pkl} are not under {args.dataroot} "
                  f"(first: {imported.missing_files[0]})")
    return 0
