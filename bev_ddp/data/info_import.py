"""Import the nuScenes info files that mmdet3d / BEVFusion users already have (``bev-ddp prepare --from-infos``).

Two pickle layouts are read, without mmdet3d or mmcv:

- **mmdet3d 1.x** (``info_version`` 1.1, and the earlier 1.x fixture layout): ``{"metainfo", "data_list"}``;
  per record ``ego2global``, ``lidar_points.{lidar_path, lidar2ego}``, per camera
  ``images.<CAM>.{img_path, cam2img, cam2ego, lidar2cam, timestamp}``, ``lidar_sweeps`` with each
  sweep's own ``ego2global`` and ``lidar_points.lidar2ego``; timestamps in seconds; file names bare
  (mmdet3d's ``data_prefix`` puts them under ``samples/<channel>/`` or ``sweeps/<channel>/``).
- **older** (mmdet3d 0.x and BEVFusion ``create_data.py``): ``{"infos", "metadata"}``; quaternions
  ``[w, x, y, z]`` and translations (``lidar2ego_*``, ``ego2global_*``, per camera
  ``sensor2ego_*``, ``sensor2lidar_*``, ``camera_intrinsics`` or ``cam_intrinsic``), ``sweeps``
  with ``sensor2lidar_*``; timestamps in microseconds; paths as the tools wrote them.

Frames: ``camera2lidar`` is camera → keyframe LiDAR through both ego poses (mmdet3d's
``lidar2cam`` inverted, or the older layout's ``sensor2lidar``); a sweep's ``sensor2lidar`` is
sweep LiDAR → keyframe LiDAR through both ego poses.  mmdet3d 1.x stores no per-camera ego pose:
it is recovered exactly as ``ego2global · lidar2ego · lidar2cam⁻¹ · cam2ego⁻¹``.

Paths: each file is looked up under the dataroot as ``samples/<channel>/<name>``,
``sweeps/<channel>/<name>``, the stored path from its ``samples``/``sweeps`` part on, and
``<name>`` (a flat folder); the first that exists is kept (else the layout's own place, and the
file is reported missing).

Unpickling runs no code: :class:`InfoUnpickler` admits plain containers and numpy arrays only;
any other class ends the import with :class:`InputError` naming it.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bev_ddp.data.infos import INFO_FORMAT, check_infos
from bev_ddp.data.sensors import CAMERA_NAMES, LIDAR_NAME
from bev_ddp.errors import InputError
from bev_ddp.files import read_json

# (module, name) a pickle may name: numpy's array reconstruction and dtypes, and plain containers
_ALLOWED_CLASSES = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict"),
})
_NUSCENES_SIZE = (1600, 900)  # (width, height) of nuScenes camera images, used when a JPEG is absent


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (numpy array buffers): latin-1 only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"the file calls _codecs.encode with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


class InfoUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays only (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_CLASSES:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise pickle.UnpicklingError(f"the file names the class {module}.{name}, which an info file never holds")


def load_info_pickle(path: str | Path) -> Any:
    """The content of an info ``.pkl`` through :class:`InfoUnpickler`; errors name the file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return InfoUnpickler(fh).load()
    except FileNotFoundError as exc:
        raise InputError(f"info pickle not found: {path}") from exc
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, ImportError) as exc:  # ImportError: numpy 2 module names under numpy 1
        raise InputError(f"cannot read info pickle {path}: {exc}") from exc


@dataclass
class _Context:
    """What a conversion needs besides the record: where files are, and what was not found."""

    source: Path
    dataroot: Path
    locations: dict[str, str]  # sample token -> location, from the devkit tables (may be empty)
    location: str | None  # --location
    missing: list[str] = field(default_factory=list)

    def resolve(self, stored: str, channel: str, folder: str) -> str:
        """The dataroot-relative path of a stored file name or path (see the module docstring)."""
        p = Path(str(stored))
        candidates = [f"{folder}/{channel}/{p.name}", f"{'sweeps' if folder == 'samples' else 'samples'}/{channel}/{p.name}"]
        for anchor in ("samples", "sweeps"):
            if anchor in p.parts:
                candidates.append(str(Path(*p.parts[p.parts.index(anchor):])))
        candidates.append(p.name)
        for rel in candidates:
            if (self.dataroot / rel).is_file():
                return rel
        self.missing.append(str(stored))
        return candidates[0]

    def location_of(self, record: dict[str, Any], token: str) -> str:
        for value in (record.get("location"), self.locations.get(token), self.location):
            if isinstance(value, str) and value:
                return value
        raise InputError(f"{self.source}: no map location for sample {token} (not in the pickle, no nuScenes tables "
                         "under the dataroot): pass --location")


def _matrix(value: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != shape or not np.isfinite(m).all():
        raise InputError(f"{where} must be a finite {shape[0]}x{shape[1]} matrix")
    return m


def _rt(rotation: Any, translation: Any, where: str) -> np.ndarray:
    """[4, 4] from a [w, x, y, z] quaternion or a 3×3 matrix and a translation."""
    out = np.eye(4)
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape == (4,):
        norm = np.linalg.norm(rot)
        if not np.isfinite(norm) or norm < 1e-6:
            raise InputError(f"{where} rotation is not a unit quaternion: {rot.tolist()}")
        w, x, y, z = rot / norm
        out[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                       [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                       [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    else:
        out[:3, :3] = _matrix(rot, (3, 3), f"{where} rotation")
    out[:3, 3] = _matrix(np.reshape(np.asarray(translation, dtype=np.float64), (1, -1)), (1, 3), f"{where} translation")
    return out


def _microseconds(value: Any, seconds: bool) -> int:
    return int(round(float(value) * 1e6)) if seconds else int(value)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, nuScenes' size when the file is absent."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return _NUSCENES_SIZE


def _scene_name(lidar_path: str, record: dict[str, Any]) -> str:
    """The scene name when stored, else the drive's log name (the LiDAR file's prefix)."""
    name = record.get("scene_name") or record.get("scene_token")
    return str(name) if name else Path(lidar_path).name.split("__")[0]


def _sorted_sweeps(sweeps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(sweeps, key=lambda s: -s["timestamp"])  # newest first


def _from_v2(rec: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """One mmdet3d 1.x ``data_list`` record."""
    token = str(rec["token"])
    where = f"{ctx.source}: sample {token}"
    lidar = rec["lidar_points"]
    lidar2ego = _matrix(lidar["lidar2ego"], (4, 4), f"{where} lidar_points.lidar2ego")
    ego2global = _matrix(rec["ego2global"], (4, 4), f"{where} ego2global")
    lidar2global = ego2global @ lidar2ego
    timestamp = _microseconds(rec["timestamp"], seconds=True)
    sweeps = []
    for j, sweep in enumerate(rec.get("lidar_sweeps") or []):
        s_where = f"{where} lidar_sweeps[{j}]"
        s2g = (_matrix(sweep["ego2global"], (4, 4), f"{s_where}.ego2global")
               @ _matrix(sweep["lidar_points"]["lidar2ego"], (4, 4), f"{s_where}.lidar_points.lidar2ego"))
        s_time = _microseconds(sweep["timestamp"], seconds=True)
        sweeps.append({"path": ctx.resolve(sweep["lidar_points"]["lidar_path"], LIDAR_NAME, "sweeps"),
                       "timestamp": s_time, "time_lag": (timestamp - s_time) / 1e6,
                       "sensor2lidar": (np.linalg.inv(lidar2global) @ s2g).tolist()})
    cams = {}
    for name, cam in (rec.get("images") or {}).items():
        if not cam or not cam.get("img_path"):
            continue
        c_where = f"{where} images.{name}"
        cam2ego = _matrix(cam["cam2ego"], (4, 4), f"{c_where}.cam2ego")
        camera2lidar = np.linalg.inv(_matrix(cam["lidar2cam"], (4, 4), f"{c_where}.lidar2cam"))
        path = ctx.resolve(cam["img_path"], name, "samples")
        width, height = _image_size(ctx.dataroot / path)
        cams[name] = {
            "path": path, "timestamp": _microseconds(cam.get("timestamp", rec["timestamp"]), seconds=True),
            "width": width, "height": height,
            "intrinsics": _matrix(np.asarray(cam["cam2img"], dtype=np.float64)[:3, :3], (3, 3),
                                  f"{c_where}.cam2img").tolist(),
            "camera2ego": cam2ego.tolist(), "camera2lidar": camera2lidar.tolist(),
            # camera → its own ego pose → global equals camera → lidar → global
            "ego2global": (lidar2global @ camera2lidar @ np.linalg.inv(cam2ego)).tolist(),
        }
    lidar_path = ctx.resolve(lidar["lidar_path"], LIDAR_NAME, "samples")
    return {"token": token, "scene_token": str(rec.get("scene_token", "")), "scene_name": _scene_name(lidar_path, rec),
            "timestamp": timestamp, "location": ctx.location_of(rec, token), "lidar_path": lidar_path,
            "lidar2ego": lidar2ego.tolist(), "ego2global": ego2global.tolist(),
            "sweeps": _sorted_sweeps(sweeps), "cams": cams}


def _from_v1(rec: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    """One record of the older layout (mmdet3d 0.x / BEVFusion ``infos``)."""
    token = str(rec["token"])
    where = f"{ctx.source}: sample {token}"
    timestamp = _microseconds(rec["timestamp"], seconds=False)
    sweeps = [{
        "path": ctx.resolve(s["data_path"], LIDAR_NAME, "sweeps"),
        "timestamp": _microseconds(s["timestamp"], seconds=False),
        "time_lag": (timestamp - _microseconds(s["timestamp"], seconds=False)) / 1e6,
        "sensor2lidar": _rt(s["sensor2lidar_rotation"], s["sensor2lidar_translation"],
                            f"{where} sweeps[{j}].sensor2lidar").tolist(),
    } for j, s in enumerate(rec.get("sweeps") or [])]
    cams = {}
    for name, cam in (rec.get("cams") or {}).items():
        c_where = f"{where} cams.{name}"
        intrinsics = cam.get("camera_intrinsics", cam.get("cam_intrinsic"))
        path = ctx.resolve(cam["data_path"], name, "samples")
        width, height = _image_size(ctx.dataroot / path)
        cams[name] = {
            "path": path, "timestamp": _microseconds(cam["timestamp"], seconds=False),
            "width": width, "height": height,
            "intrinsics": _matrix(intrinsics, (3, 3), f"{c_where} intrinsics").tolist(),
            "camera2ego": _rt(cam["sensor2ego_rotation"], cam["sensor2ego_translation"], f"{c_where}.sensor2ego").tolist(),
            "camera2lidar": _rt(cam["sensor2lidar_rotation"], cam["sensor2lidar_translation"],
                                f"{c_where}.sensor2lidar").tolist(),
            "ego2global": _rt(cam["ego2global_rotation"], cam["ego2global_translation"], f"{c_where}.ego2global").tolist(),
        }
    lidar_path = ctx.resolve(rec["lidar_path"], LIDAR_NAME, "samples")
    return {"token": token, "scene_token": str(rec.get("scene_token", "")), "scene_name": _scene_name(lidar_path, rec),
            "timestamp": timestamp, "location": ctx.location_of(rec, token), "lidar_path": lidar_path,
            "lidar2ego": _rt(rec["lidar2ego_rotation"], rec["lidar2ego_translation"], f"{where} lidar2ego").tolist(),
            "ego2global": _rt(rec["ego2global_rotation"], rec["ego2global_translation"], f"{where} ego2global").tolist(),
            "sweeps": _sorted_sweeps(sweeps), "cams": cams}


def _table_locations(dataroot: Path, version: str | None) -> dict[str, str]:
    """sample token → map location from the devkit tables under ``dataroot/<version>``, when present."""
    folders = [dataroot / version] if version else sorted(p for p in dataroot.glob("v1.0-*") if p.is_dir())
    for folder in folders:
        if not all((folder / f"{t}.json").is_file() for t in ("sample", "scene", "log")):
            continue
        logs = {r["token"]: r["location"] for r in read_json(folder / "log.json", what="nuScenes table")}
        scenes = {r["token"]: logs.get(r["log_token"], "") for r in read_json(folder / "scene.json", what="nuScenes table")}
        return {r["token"]: scenes.get(r["scene_token"], "") for r in read_json(folder / "sample.json", what="nuScenes table")}
    return {}


@dataclass(frozen=True)
class ImportedInfos:
    """Our info records converted from one pickle, and what the conversion noticed."""

    metadata: dict[str, Any]
    infos: list[dict[str, Any]]
    missing_files: list[str]  # stored paths not found under the dataroot


def import_info_pickle(path: str | Path, dataroot: str | Path, *, location: str | None = None,
                       version: str | None = None) -> ImportedInfos:
    """Convert an mmdet3d / BEVFusion ``nuscenes_infos_*.pkl`` (either layout) to our info records.

    Args:
        path: the pickle.
        dataroot: the nuScenes dataroot the files are resolved under.
        location: map location for records whose pickle and tables name none.
        version: table folder to read locations from (default: any ``v1.0-*`` found).

    Raises:
        InputError: naming the file (and the sample and key) for a forbidden class, an unknown
            layout, a missing key, a bad matrix, or a record without a map location.
    """
    path, dataroot = Path(path), Path(dataroot)
    data = load_info_pickle(path)
    if isinstance(data, dict) and isinstance(data.get("data_list"), list):
        records, convert, layout = data["data_list"], _from_v2, "mmdet3d-1.x"
        meta = data.get("metainfo") or {}
    elif isinstance(data, dict) and isinstance(data.get("infos"), list) or isinstance(data, list):
        records, convert, layout = (data["infos"] if isinstance(data, dict) else data), _from_v1, "mmdet3d-0.x/bevfusion"
        meta = (data.get("metadata") if isinstance(data, dict) else None) or {}
    else:
        raise InputError(f"{path} is not an mmdet3d or BEVFusion info file (need 'data_list' or 'infos')")
    ctx = _Context(source=path, dataroot=dataroot, locations=_table_locations(dataroot, version), location=location)
    infos = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(f"{path}: record {i} is not a dict")
        try:
            infos.append(convert(rec, ctx))
        except InputError:
            raise
        except KeyError as exc:
            raise InputError(f"{path}: record {i} lacks {exc}") from exc
        except (TypeError, ValueError, np.linalg.LinAlgError) as exc:
            raise InputError(f"{path}: record {i} has a bad value: {exc}") from exc
    check_infos(path, infos)  # the checks every info file gets
    metadata = {"format": INFO_FORMAT, "version": str(meta.get("version", version or "")), "converted_from": str(path),
                "source_layout": layout, "camera_names": list(CAMERA_NAMES)}
    return ImportedInfos(metadata=metadata, infos=infos, missing_files=ctx.missing)


def imported_info_name(pkl: str | Path) -> str:
    """``bev_ddp_infos_<split>.json`` for ``*_train.pkl`` / ``*_val.pkl`` (the names configs read),
    else ``bev_ddp_infos_<stem>.json``."""
    stem = Path(pkl).stem
    for split in ("train", "val", "test"):
        if stem.endswith(f"_{split}"):
            return f"bev_ddp_infos_{split}.json"
    return f"bev_ddp_infos_{stem}.json"
