"""DDP for monocular depth estimation (paper §4.4, Appendix B.3).

image → :class:`~bev_ddp.nn.image_encoder.ImageEncoder` (the encoder segmentation uses too: backbone
→ FPN 256 → merge, condition at 1/4) → :class:`~bev_ddp.nn.DDPHead` with continuous depth encoding
(scale 0.1, valid-mask-aware downsampling of sparse ground truth), output
``ReLU(logits) + min_depth`` and :class:`~bev_ddp.depth.losses.SigLoss` on valid pixels.

Inference: whole image or sliding windows (:mod:`bev_ddp.nn.dense_inference`); with ``flip_tta``
the horizontally flipped image is predicted too and the two depth maps (flipped back) are
averaged, as are the uncertainty maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn import DDPHead
from bev_ddp.nn.dense_inference import DenseMaps, SlidingWindow, check_images, dense_predictions
from bev_ddp.nn.image_encoder import ImageEncoder


@dataclass
class DepthPrediction:
    """Prediction for one sampling step count at the ground truth's size.

    Attributes:
        depth: float [B, 1, H, W] metres (>= min_depth).
        uncertainty: float [B, H, W] in [0, 1], change count of the depth bin between steps.
    """

    depth: torch.Tensor
    uncertainty: torch.Tensor


class DDPDepthEstimator(nn.Module):
    """Monocular depth with the DDP map decoder.

    Args:
        encoder: image → condition [B, C, H/4, W/4].
        head: DDP head whose label encoder is a :class:`~bev_ddp.depth.encoding.ReLUDepthEncoder`
            and whose objective is a :class:`~bev_ddp.depth.losses.SigLoss`.
        flip_tta: average with the prediction of the horizontally flipped image.
        window: sliding-window inference; None = whole image (padded to ``encoder.size_divisor``).
    """

    def __init__(self, *, encoder: ImageEncoder, head: DDPHead, flip_tta: bool = True,
                 window: Optional[SlidingWindow] = None) -> None:
        super().__init__()
        if not hasattr(head.label_encoder, "decode"):
            raise InputError("the depth head needs a continuous label encoder with decode()")
        self.encoder, self.head = encoder, head
        self.flip_tta = flip_tta
        self.window = window

    def forward(self, batch: dict[str, Any], self_aligned: bool = False) -> tuple[None, dict[str, torch.Tensor]]:
        """Training loss ``loss_ddp`` (SigLoss of the denoised depth map).

        ``batch['img']`` float [B, 3, H, W]; ``batch['gt_depth']`` float [B, 1, H, W] metres, 0 = invalid.
        """
        images = check_images(batch)
        target = batch.get("gt_depth")
        if not isinstance(target, torch.Tensor) or target.shape != (images.shape[0], 1, *images.shape[-2:]):
            got = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
            raise InputError(f"batch['gt_depth'] must be [B, 1, H, W] like the images {tuple(images.shape)}, got {got}")
        cond = self.encoder(images)  # [B, C, H/4, W/4]
        return None, dict(self.head.loss(cond, target, self_aligned=self_aligned))

    def _dense(self, images: torch.Tensor, steps: list[int], seed: int) -> DenseMaps:
        """images [B, 3, h, w] -> {steps: [depth [B, 1, h, w], uncertainty [B, 1, h, w]]}."""
        batch = torch.cat([images, images.flip(-1)]) if self.flip_tta else images  # [B or 2B, 3, h, w]
        cond = self.encoder(batch)
        out: DenseMaps = {}
        b = images.shape[0]
        preds = self.head.predict_many(cond, steps=steps, seed=seed, output_size=tuple(images.shape[-2:]))
        for s, pred in preds.items():  # one shared first decoder call for every step count
            depth = self.head.label_encoder.decode(pred.logits)  # [B', 1, h, w]
            uncertainty = pred.uncertainty[:, None].float()  # [B', 1, h, w]
            if self.flip_tta:
                depth = (depth[:b] + depth[b:].flip(-1)) / 2
                uncertainty = (uncertainty[:b] + uncertainty[b:].flip(-1)) / 2
            out[s] = [depth, uncertainty]
        return out

    @property
    def steps(self) -> int:
        """Sampling steps of :meth:`predict` when none are asked for (``model.ddp.steps``)."""
        return self.head.steps

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], steps: Sequence[int] | None = None,
                seed: int = 0) -> dict[int, DepthPrediction]:
        """Depth per step count at ``batch['ori_size']`` (see :class:`DepthPrediction`)."""
        maps = dense_predictions(batch, self.steps if steps is None else steps, lambda x, s: self._dense(x, s, seed),
                                 window=self.window, size_divisor=self.encoder.size_divisor)
        return {s: DepthPrediction(depth=depth, uncertainty=uncertainty) for s, (depth, uncertainty) in maps.items()}
