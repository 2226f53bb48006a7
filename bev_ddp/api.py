"""The public Python API: load a model, build a batch, predict (re-exported by ``bev_ddp``).

In the style of mmdet's ``init_detector`` / ``inference_detector``::

    from bev_ddp import init_model, inference_bev
    model = init_model("work_dirs/synth_tiny_fusion_ddp", device="cpu")  # a run folder or checkpoint
    pred = inference_bev(model, info, seed=0)   # info: one record of an info file; steps: the model's
    pred.probs        # [1, K, X, Y] per-class probabilities on the label grid (LiDAR frame)
    pred.uncertainty  # [1, X, Y] share of sampling steps whose map changed, in [0, 1]

A batch comes from (a) a nuScenes info record (``bev-ddp prepare`` / :func:`read_infos`), built
exactly as the evaluation dataset builds it, or (b) raw inputs: six camera images, a LiDAR cloud
and the calibrations (:func:`build_batch`); both by the data layer's
:class:`~bev_ddp.data.sample_builder.SampleBuilder`, which the replay uses too.  Cameras are
in the order of :data:`CAMERA_NAMES`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bev_ddp.data.geometry import check_intrinsics, check_rigid
from bev_ddp.data.infos import check_record, read_infos
from bev_ddp.data.lidar_io import check_point_values
from bev_ddp.data.sensors import CAMERA_NAMES
from bev_ddp.errors import InputError

__all__ = ["CAMERA_NAMES", "build_batch", "inference_bev", "init_model", "read_infos"]


def init_model(config: str | Path, checkpoint: str | Path | None = None, *, device: str | torch.device = "cpu",
               overrides: Sequence[str] = (), backend: str = "torch",
               onnx: str | Path | None = None) -> torch.nn.Module:
    """Build a model, load its weights and put it in eval mode on ``device``.

    ``init_model(CKPT)``: a training checkpoint or run folder carries its config (like diffusers'
    ``from_pretrained``); ``init_model(CONFIG, CKPT)`` builds the YAML config instead (needed for bare
    state dicts and converted weights); ``init_model(CONFIG)`` keeps the config's initial weights (or
    its ``model.checkpoint``).

    Args:
        config: YAML config with a ``task:`` key (bev, seg or depth), or the checkpoint / run folder.
        checkpoint: training checkpoint (``.pth``, its ``model`` entry) or bare state dict, after a config.
        overrides: ``key=value`` config overrides, as on the command line.
        backend: ``"torch"`` or ``"onnxruntime"`` (BEV models: the graphs of ``onnx``, the folder
            ``bev-ddp export`` wrote; its fingerprints must match ``config`` and ``checkpoint``).

    Returns:
        The model, with its config as ``model.cfg``.
    """
    from bev_ddp.engine.pretrained import build_pretrained, resolve_model_source, split_config_and_checkpoint

    config, checkpoint = split_config_and_checkpoint([config] if checkpoint is None else [config, checkpoint])
    model = build_pretrained(resolve_model_source(config, checkpoint, overrides), device=device)
    if backend != "torch" or onnx is not None:
        from bev_ddp.deploy.onnx_backend import backend_model

        cfg = model.cfg
        model = backend_model(model, backend, onnx, cfg=cfg, config=config, checkpoint=checkpoint)
        model.cfg = cfg
    return model


def _config_of(model: torch.nn.Module) -> Any:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise InputError("the model has no .cfg: build it with bev_ddp.init_model(checkpoint)")
    if cfg.task != "bev":
        raise InputError(f"inference_bev needs a BEV model (task: bev), this one is for task {cfg.task!r}")
    return cfg


def _from_info(cfg: Any, info: Mapping[str, Any], dataroot: str | Path | None) -> dict[str, Any]:
    """One evaluation sample of an info record, through :class:`~bev_ddp.data.nuscenes.NuScenesBEVDataset`."""
    from bev_ddp.data.nuscenes import NuScenesBEVDataset
    from bev_ddp.nn.backbone import image_normalisation

    check_record(info, "info record")
    dataset = NuScenesBEVDataset([dict(info)], dataroot or cfg.data.dataroot, image_size=tuple(cfg.data.image_size),
                                 load_sweeps=int(cfg.data.load_sweeps), classes=tuple(cfg.data.classes),
                                 xbound=tuple(cfg.data.xbound), ybound=tuple(cfg.data.ybound), with_labels=False,
                                 normalisation=image_normalisation(cfg.model.camera.backbone))
    return dataset[0]


def check_image(image: Any, name: str) -> np.ndarray:
    """An RGB image as the model reads it: uint8 [H, W, 3]; anything else (float in [0, 1],
    uint16, grey) raises :class:`InputError` naming ``name`` instead of being cast silently."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        hint = " (scale to 0..255 and cast to uint8 yourself)" if array.dtype != np.uint8 else ""
        raise InputError(f"{name} must be uint8 [H, W, 3] RGB, got {array.dtype} {list(array.shape)}{hint}")
    return array


def _from_raw(cfg: Any, images: Sequence[np.ndarray | None] | Mapping[str, np.ndarray | None], points: np.ndarray,
              intrinsics: np.ndarray, camera2lidar: np.ndarray, lidar2ego: np.ndarray | None = None,
              camera2ego: np.ndarray | None = None) -> dict[str, Any]:
    from bev_ddp.data.sample_builder import SampleBuilder, SensorInputs

    if isinstance(images, Mapping):
        images = [images.get(name) for name in CAMERA_NAMES]
    n = len(CAMERA_NAMES)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    camera2lidar = np.asarray(camera2lidar, dtype=np.float64)
    if len(images) != n or intrinsics.shape != (n, 3, 3) or camera2lidar.shape != (n, 4, 4):
        raise InputError(f"raw inputs need {n} images, intrinsics [{n}, 3, 3] and camera2lidar [{n}, 4, 4]; got "
                         f"{len(images)} images, intrinsics {intrinsics.shape}, camera2lidar {camera2lidar.shape}")
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] not in (4, 5):
        raise InputError(f"points must be [N, 4] (x, y, z, intensity) or [N, 5] (+ time lag), got {points.shape}")
    check_point_values(points, "points", ("x", "y", "z", "intensity", "time lag"))
    if points.shape[1] == 4:
        points = np.concatenate([points, np.zeros((len(points), 1), np.float32)], axis=1)  # lag 0: one sweep
    lidar2ego = np.eye(4) if lidar2ego is None else check_rigid(lidar2ego, "lidar2ego")
    for i, name in enumerate(CAMERA_NAMES):
        check_intrinsics(intrinsics[i], f"intrinsics[{i}] ({name})")
        check_rigid(camera2lidar[i], f"camera2lidar[{i}] ({name})")
    if camera2ego is None:
        camera2ego = lidar2ego @ camera2lidar  # [N_cam, 4, 4]
    camera2ego = np.asarray(camera2ego, dtype=np.float64)
    if camera2ego.shape != (n, 4, 4):
        raise InputError(f"camera2ego must be [{n}, 4, 4], got {camera2ego.shape}")
    for i, name in enumerate(CAMERA_NAMES):
        check_rigid(camera2ego[i], f"camera2ego[{i}] ({name})")
    images = [None if image is None else check_image(image, f"image of {name}")
              for name, image in zip(CAMERA_NAMES, images)]
    frame = SensorInputs(
        points=points,
        images=dict(zip(CAMERA_NAMES, images)),
        image_sizes={k: None if im is None else tuple(np.shape(im)[:2]) for k, im in zip(CAMERA_NAMES, images)},
        intrinsics=dict(zip(CAMERA_NAMES, intrinsics)), camera2lidar=dict(zip(CAMERA_NAMES, camera2lidar)),
        camera2ego=dict(zip(CAMERA_NAMES, camera2ego)), lidar2ego=lidar2ego,
    )
    return SampleBuilder.from_config(cfg)(frame)


def build_batch(model: torch.nn.Module, info: Mapping[str, Any] | None = None, *, dataroot: str | Path | None = None,
                **raw: Any) -> dict[str, Any]:
    """A batch of one sample for ``model`` (built with :func:`init_model`), on the model's device.

    Args:
        info: a nuScenes info record (paths relative to ``dataroot``, default the config's
            ``data.dataroot``); or, instead, the raw inputs as keywords:
        images: six uint8 [H, W, 3] RGB images (``None`` for a missing camera), a list in
            :data:`CAMERA_NAMES` order or a dict by camera name;
        points: float [N, 4] (x, y, z m in the LiDAR frame, intensity) or [N, 5] with the time lag (s);
        intrinsics: [6, 3, 3] pixels of the given images; camera2lidar: [6, 4, 4];
        lidar2ego, camera2ego: optional [4, 4] / [6, 4, 4] (identity / lidar2ego @ camera2lidar).
    """
    from bev_ddp.data.structures import collate_samples
    from bev_ddp.engine.data import move_to_device

    cfg = _config_of(model)
    if (info is None) == (not raw):
        raise InputError("build_batch takes either an info record or raw inputs (images, points, intrinsics, "
                         "camera2lidar)")
    sample = _from_info(cfg, info, dataroot) if info is not None else _from_raw(cfg, **raw)
    device = next(model.parameters()).device
    return move_to_device(collate_samples([sample]), device)


def inference_bev(model: torch.nn.Module, inputs: Mapping[str, Any], *, steps: int | None = None, seed: int = 0,
                  dataroot: str | Path | None = None):
    """Predict a BEV map with ``steps`` DDP sampling steps (same ``seed``, same map).

    ``steps``: default the model's own (``model.head.ddp.steps``, :attr:`BEVFusionModel.steps`).

    Args:
        inputs: a batch (from :func:`build_batch` or a data loader), an info record (has
            ``lidar_path``), or a dict of raw inputs (``images``, ``points``, ``intrinsics``,
            ``camera2lidar``, optional ``lidar2ego`` / ``camera2ego``; see :func:`build_batch`).

    Returns:
        :class:`~bev_ddp.bev.heads.BEVPrediction`: ``probs`` [B, K, X, Y], ``uncertainty`` [B, X, Y].
    """
    if "img" in inputs:  # a batch, or one sample as the dataset yields it
        from bev_ddp.data.structures import collate_samples
        from bev_ddp.engine.data import move_to_device

        batch = collate_samples([dict(inputs)]) if inputs["img"].dim() == 4 else dict(inputs)
        batch = move_to_device(batch, next(model.parameters()).device)
    elif "lidar_path" in inputs:
        batch = build_batch(model, inputs, dataroot=dataroot)
    else:
        batch = build_batch(model, dataroot=dataroot, **inputs)
    with torch.inference_mode():
        preds = model.predict(batch, steps=None if steps is None else [steps], seed=seed)
    return next(iter(preds.values()))
