"""bev_ddp: BEVFusion with a diffusion map decoder (DDP).

Camera and LiDAR BEV features are fused and handed to a lightweight map decoder that denoises a
random map into a BEV semantic map in a few steps.  The same decoder serves image segmentation
(:mod:`bev_ddp.seg`) and monocular depth (:mod:`bev_ddp.depth`).

Python API (:mod:`bev_ddp.api`, imported on first use so ``import bev_ddp`` stays light)::

    from bev_ddp import init_model, inference_bev
    model = init_model("configs/bev/synth_tiny_fusion_ddp.yaml", "latest.pth", device="cpu")
    pred = inference_bev(model, info_record_or_raw_inputs, steps=3, seed=0)
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("init_model", "build_batch", "inference_bev", "read_infos", "CAMERA_NAMES")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from bev_ddp import api

        return getattr(api, name)
    raise AttributeError(f"module 'bev_ddp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
