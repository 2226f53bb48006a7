"""The public Python API: load a model, build a batch, predict (re-exported by ``bev_ddp``).

In the style of mmdet's ``init_detector`` / ``inference_detector``::

    from bev_ddp import init_model, inference_bev
    model = init_model("configs/bev/synth_tiny_fusion_ddp.yaml", "latest.pth", device="cpu")
    pred = inference_bev(model, info, steps=3, seed=0)   # info: one record of an info file
    pred.probs        # [1, K, X, Y] per-class probabilities on the label grid (LiDAR frame)
    pred.uncertainty  # [1, X, Y] share of sampling steps whose map changed, in [0, 1]

A batch comes from (a) a nuScenes info record (``bev-ddp prepare`` / :func:`read_infos`), built
exactly as the evaluation dataset builds it, or (b) raw inputs: six camera images, a LiDAR cloud
and the calibrations (:func:`build_batch`), built as the replay builds its frames.  Cameras are
in the order of :data:`CAMERA_NAMES`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bev_ddp.data.infos import read_infos
from bev_ddp.data.sensors import CAMERA_NAMES
from bev_ddp.errors import InputError

__all__ = ["CAMERA_NAMES", "build_batch", "inference_bev", "init_model", "read_infos"]


def init_model(config: str | Path, checkpoint: str | Path | None = None, *, device: str | torch.device = "cpu",
               overrides: Sequence[str] = (), backend: str = "torch",
               onnx: str | Path | None = None) -> torch.nn.Module:
    """Build the model of a YAML config, load a checkpoint and put it in eval mode on ``device``.

    Args:
        config: YAML config with a ``task:`` key (bev, seg or depth).
        checkpoint: training checkpoint (``.pth``, its ``model`` entry) or bare state dict;
            ``None`` keeps the initial weights.
        overrides: ``key=value`` config overrides, as on the command line.
        backend: ``"torch"`` or ``"onnxruntime"`` (BEV models: the graphs of ``onnx``, the folder
            ``bev-ddp export`` wrote; its fingerprints must match ``config`` and ``checkpoint``).

    Returns:
        The model, with the loaded config as ``model.cfg``.
    """
    from bev_ddp.engine.checkpoint import load_model_weights
    from bev_ddp.engine.cli_support import load_task_config

    cfg, task = load_task_config(config, list(overrides))
    model = task.build_model(cfg)
    if checkpoint is not None:
        load_model_weights(model, checkpoint)
    model = model.to(device).eval()
    if backend != "torch" or onnx is not None:
        from bev_ddp.deploy.onnx_backend import backend_model

        model = backend_model(model, backend, onnx, cfg=cfg, config=config, checkpoint=checkpoint)
    model.cfg = cfg
    return model


def _config_of(model: torch.nn.Module) -> Any:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise InputError("the model has no .cfg: build it with bev_ddp.init_model(config, checkpoint)")
    if cfg.task != "bev":
        raise InputError(f"inference_bev needs a BEV model (task: bev), this one is for task {cfg.task!r}")
    return cfg


def _from_info(cfg: Any, info: Mapping[str, Any], dataroot: str | Path | None) -> dict[str, Any]:
    """One evaluation sample of an info record, through :class:`~bev_ddp.data.nuscenes.NuScenesBEVDataset`."""
    from bev_ddp.data.infos import INFO_FORMAT, write_infos
    from bev_ddp.data.nuscenes import NuScenesBEVDataset

    with tempfile.TemporaryDirectory() as folder:  # the dataset reads records from an info file
        path = write_infos(Path(folder) / "one.json", {"format": INFO_FORMAT}, [dict(info)])
        dataset = NuScenesBEVDataset(path, dataroot or cfg.data.dataroot, image_size=tuple(cfg.data.image_size),
                                     load_sweeps=int(cfg.data.load_sweeps), classes=tuple(cfg.data.classes),
                                     xbound=tuple(cfg.data.xbound), ybound=tuple(cfg.data.ybound), with_labels=False)
    return dataset[0]


def _from_raw(cfg: Any, images: Sequence[np.ndarray | None] | Mapping[str, np.ndarray | None], points: np.ndarray,
              intrinsics: np.ndarray, camera2lidar: np.ndarray, lidar2ego: np.ndarray | None = None,
              camera2ego: np.ndarray | None = None) -> dict[str, Any]:
    from bev_ddp.replay.sample import SampleBuilder
    from bev_ddp.replay.sync import SensorFrame

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
    if points.shape[1] == 4:
        points = np.concatenate([points, np.zeros((len(points), 1), np.float32)], axis=1)  # lag 0: one sweep
    lidar2ego = np.eye(4) if lidar2ego is None else np.asarray(lidar2ego, dtype=np.float64)
    if camera2ego is None:
        camera2ego = lidar2ego @ camera2lidar  # [N_cam, 4, 4]
    for name, image in zip(CAMERA_NAMES, images):
        if image is not None and (np.ndim(image) != 3 or np.shape(image)[2] != 3):
            raise InputError(f"image of {name} must be uint8 [H, W, 3] RGB, got shape {np.shape(image)}")
    frame = SensorFrame(
        index=0, stamp_ns=0, lidar_frame="lidar", points=points, sweeps_used=1,
        images={k: None if im is None else np.asarray(im, dtype=np.uint8) for k, im in zip(CAMERA_NAMES, images)},
        image_stamps_ns={k: 0 for k in CAMERA_NAMES},
        image_sizes={k: None if im is None else tuple(np.shape(im)[:2]) for k, im in zip(CAMERA_NAMES, images)},
        intrinsics=dict(zip(CAMERA_NAMES, intrinsics)), camera2lidar=dict(zip(CAMERA_NAMES, camera2lidar)),
        camera2ego=dict(zip(CAMERA_NAMES, np.asarray(camera2ego, dtype=np.float64))), lidar2ego=lidar2ego,
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


def inference_bev(model: torch.nn.Module, inputs: Mapping[str, Any], *, steps: int = 3, seed: int = 0,
                  dataroot: str | Path | None = None):
    """Predict a BEV map with ``steps`` DDP sampling steps (same ``seed``, same map).

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
        return model.predict(batch, steps=[int(steps)], seed=seed)[int(steps)]
