"""Export a BEV model to ONNX: the camera stage and one map stage per step count, plus ``export.json``.

Files in the export folder::

    camera.onnx        images + calibration -> camera BEV features   (models with a camera)
    map_s{S}.onnx      encoder BEV maps + start map -> S steps' logits (DDP head, one per S)
    map.onnx           encoder BEV maps -> logits                     (baseline head)
    export.json        shapes, opset, steps, inputs/outputs of each graph, config and checkpoint
                       fingerprints, torch / onnx versions

The graphs are traced with batch size 1 and fixed shapes; the runtime
(:class:`bev_ddp.deploy.onnx_backend.OnnxBEVModel`) runs a batch sample by sample.  The ops are
traced through their pure-PyTorch references (:func:`bev_ddp.ops.reference_ops`): ``bev_pool`` is
an ``index_add`` (ONNX ScatterND with add), ``ms_deform_attn`` a ``grid_sample`` (GridSample).
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from bev_ddp.bev.model import BEVFusionModel
from bev_ddp.deploy.stages import CameraStage, MapStage
from bev_ddp.errors import InputError
from bev_ddp.ops import reference_ops
from bev_ddp.output_files import atomic_path, write_text_atomic

EXPORT_FILE = "export.json"
EXPORT_FORMAT = 1
DEFAULT_OPSET = 18  # GridSample (16) and ScatterND with reduction add (16), Col2Im-free
DATA_KEYS = ("image_size", "xbound", "ybound", "classes")  # data settings the graphs bake in


def config_fingerprint(cfg: Any) -> str:
    """sha256 (16 hex digits) of what the graphs depend on: the ``model`` section and the data
    keys of :data:`DATA_KEYS` (not the dataroot, the splits or the training settings)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg.data, resolve=True)
    payload = {"model": OmegaConf.to_container(cfg.model, resolve=True),
               "data": {k: data.get(k) for k in DATA_KEYS}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of the model's weights and buffers, in state-dict order: the
    checkpoint as loaded (the same weights give the same fingerprint whatever file held them)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class ExportResult:
    """What :func:`export_bev_model` wrote: the folder, the graph files, the manifest, seconds."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def example_inputs(model: BEVFusionModel, *, image_size: Sequence[int], num_cams: int) -> dict[str, torch.Tensor]:
    """Batch-1 example inputs of the camera stage (shapes only matter): zero images, identity
    calibration with a pinhole focal length of half the image width."""
    h, w = (int(v) for v in image_size)
    intrinsics = torch.eye(4).repeat(1, num_cams, 1, 1)  # [1, N, 4, 4]
    intrinsics[..., 0, 0] = intrinsics[..., 1, 1] = 0.5 * w
    intrinsics[..., 0, 2], intrinsics[..., 1, 2] = w / 2, h / 2
    eye = torch.eye(4)
    return {"img": torch.zeros(1, num_cams, 3, h, w), "intrinsics": intrinsics,
            "camera2lidar": eye.repeat(1, num_cams, 1, 1), "img_aug": eye.repeat(1, num_cams, 1, 1),
            "lidar_aug": eye.repeat(1, 1, 1), "camera_valid": torch.ones(1, num_cams)}


def _encoder_maps(model: BEVFusionModel, camera_inputs: dict[str, torch.Tensor] | None) -> list[torch.Tensor]:
    """Batch-1 encoder BEV maps, one per modality (their shapes are the map stage's inputs)."""
    maps = []
    with torch.no_grad():
        if model.camera is not None:
            maps.append(CameraStage(model.camera)(*camera_inputs.values()))
        if model.lidar is not None:
            points = torch.zeros(1, 5)  # one point at the origin: the map's shape, not its content
            maps.append(model.lidar([points]))
    return maps


def _save(program, path: Path) -> Path:
    import onnx

    with atomic_path(path) as tmp:
        program.save(str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return path


def _export(module: torch.nn.Module, args: tuple, path: Path, *, names: list[str], outputs: list[str],
            opset: int) -> Path:
    from bev_ddp.deploy.onnx_ops import translation_table

    with reference_ops(), torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=names,
                                    output_names=outputs, custom_translation_table=translation_table(),
                                    verbose=False)
    return _save(program, path)


def export_bev_model(model: BEVFusionModel, cfg: Any, out_dir: str | Path, *, steps: Sequence[int],
                     opset: int = DEFAULT_OPSET, num_cams: int = 6, checkpoint: str | Path | None = None,
                     config_path: str | Path | None = None) -> ExportResult:
    """Export ``model`` (eval mode, CPU) into ``out_dir``; see the module docstring for the files.

    Args:
        model: the BEV model with its weights loaded.
        cfg: its config (for the fingerprint and the image size).
        out_dir: the export folder (created; existing graphs are replaced).
        steps: DDP step counts, one map graph each (ignored by the baseline head).
        opset: ONNX opset (>= 16: GridSample, ScatterND with add).
        num_cams: cameras per sample the camera graph takes.
        checkpoint, config_path: recorded in ``export.json`` for the reader.
    """
    if opset < 16:
        raise InputError(f"--opset must be >= 16 (GridSample, ScatterND with reduction add), got {opset}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    model = model.cpu().eval()
    result = ExportResult(out_dir=out_dir)
    graphs: dict[str, Any] = {}
    camera_inputs = None
    if model.camera is not None:
        camera_inputs = example_inputs(model, image_size=model.camera.view_transform.image_size, num_cams=num_cams)
        names = list(camera_inputs)
        result.files.append(_export(CameraStage(model.camera).eval(), tuple(camera_inputs.values()),
                                    out_dir / "camera.onnx", names=names, outputs=["camera_bev"], opset=opset))
        graphs["camera"] = {"file": "camera.onnx", "inputs": {k: list(v.shape) for k, v in camera_inputs.items()},
                            "outputs": {"camera_bev": None}}
    maps = _encoder_maps(model, camera_inputs)
    map_names = [f"{m}_bev" for m in model.modalities]
    if "camera" in graphs:
        graphs["camera"]["outputs"]["camera_bev"] = list(maps[0].shape)
    stage = MapStage(model, steps=1).eval()
    counts = sorted({int(s) for s in steps}) if stage.is_ddp else [1]
    noise_shape = stage.noise_shape(1, tuple(maps[0].shape[-2:])) if stage.is_ddp else None
    for count in counts:
        stage = MapStage(model, steps=count).eval()
        args = tuple(maps) + ((torch.zeros(noise_shape),) if stage.is_ddp else ())
        names = map_names + (["noise"] if stage.is_ddp else [])
        name = f"map_s{count}" if stage.is_ddp else "map"
        result.files.append(_export(stage, args, out_dir / f"{name}.onnx", names=names, outputs=["step_logits"],
                                    opset=opset))
        with torch.no_grad():
            out_shape = list(stage(*args).shape)
        graphs[name] = {"file": f"{name}.onnx", "steps": count, "inputs": {n: list(a.shape) for n, a in zip(names, args)},
                        "outputs": {"step_logits": out_shape}}
    import onnx
    import onnxruntime

    result.manifest = {
        "format": EXPORT_FORMAT,
        "head": "ddp" if stage.is_ddp else "baseline",
        "modalities": list(model.modalities),
        "steps": counts if stage.is_ddp else [],
        "opset": int(opset),
        "batch_size": 1,
        "num_cams": num_cams if model.camera is not None else 0,
        "noise_shape": list(noise_shape) if noise_shape else None,
        "graphs": graphs,
        "split": {"camera": "camera.onnx" if model.camera is not None else None,
                  "lidar": "PyTorch (spconv voxelization + sparse convolutions)" if model.lidar is not None else None,
                  "map": "fuser + BEV decoder + head" + (", DDIM steps unrolled, start map as input" if stage.is_ddp else "")},
        "config": str(config_path) if config_path else None,
        "config_fingerprint": config_fingerprint(cfg),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_fingerprint": weights_fingerprint(model),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
    }
    result.seconds = time.perf_counter() - start
    result.manifest["export_seconds"] = round(result.seconds, 2)
    result.files.append(write_text_atomic(out_dir / EXPORT_FILE, json.dumps(result.manifest, indent=2) + "\n"))
    return result
