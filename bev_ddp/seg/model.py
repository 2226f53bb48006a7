"""DDP for image semantic segmentation (paper §3, §4.2; Table 1 setting).

image → :class:`~bev_ddp.nn.image_encoder.ImageEncoder` (backbone → FPN 256 → multi-stage merge,
condition at 1/4 resolution) → :class:`~bev_ddp.nn.DDPHead` (map decoder with class embedding,
scale 0.01, cross-entropy objective) plus an auxiliary :class:`~bev_ddp.seg.heads.FCNHead` (0.4)
during training.

Inference (Alg. 2) runs the encoder once per image (or window) and the DDIM sampler once per
requested step count.  With ``accumulate`` the class probabilities of all sampling steps are
averaged instead of taking the last step's (the reference code's "accumulation" option).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.errors import InputError
from bev_ddp.nn import DDPHead
from bev_ddp.nn.dense_inference import DenseMaps, MultiScaleFlip, SlidingWindow, check_images, dense_predictions
from bev_ddp.nn.image_encoder import ImageEncoder
from bev_ddp.seg.heads import FCNHead


@dataclass
class SegPrediction:
    """Prediction for one sampling step count, at the ground truth's size ``ori_size``.

    Attributes:
        labels: int64 [B, H, W] class ids.
        confidence: float [B, H, W] probability of the predicted class.
        uncertainty: float [B, H, W] in [0, 1], DDP change-count uncertainty (0 for one step).
    """

    labels: torch.Tensor
    confidence: torch.Tensor
    uncertainty: torch.Tensor


class DDPSegmentor(nn.Module):
    """Image segmentation with the DDP map decoder.

    Args:
        encoder: image → condition [B, C, H/4, W/4].
        head: DDP head with a single-label class encoder and a cross-entropy objective.
        aux_head: optional FCN head on the condition (training only).
        aux_weight: weight of the auxiliary loss (0.4).
        ignore_index: unlabelled value of ``gt_seg``.
        accumulate: average the class probabilities of every sampling step at inference.
        window: sliding-window inference; None = whole image (padded to ``encoder.size_divisor``).
        tta: multi-scale + flip test-time augmentation (class probabilities averaged); None = off.
    """

    def __init__(self, *, encoder: ImageEncoder, head: DDPHead, aux_head: Optional[FCNHead] = None,
                 aux_weight: float = 0.4, ignore_index: int = 255, accumulate: bool = False,
                 window: Optional[SlidingWindow] = None, tta: Optional[MultiScaleFlip] = None) -> None:
        super().__init__()
        self.encoder, self.head, self.aux_head = encoder, head, aux_head
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index
        self.accumulate = accumulate
        self.window = window
        self.tta = tta
        self.num_classes = head.decoder.out_channels

    # ------------------------------------------------------------------------- training
    def forward(self, batch: dict[str, Any], self_aligned: bool = False) -> tuple[None, dict[str, torch.Tensor]]:
        """Training losses: ``loss_ddp`` (CE of the denoised map) and ``loss_aux`` (FCN head).

        ``batch['img']`` float [B, 3, H, W], ``batch['gt_seg']`` int64 [B, H, W] (255 = ignore).
        """
        images = check_images(batch)
        target = batch.get("gt_seg")
        if not isinstance(target, torch.Tensor) or target.shape != (images.shape[0], *images.shape[-2:]):
            got = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
            raise InputError(f"batch['gt_seg'] must be [B, H, W] like the images {tuple(images.shape)}, got {got}")
        cond = self.encoder(images)  # [B, C, H/4, W/4]
        losses = dict(self.head.loss(cond, target, self_aligned=self_aligned))
        if self.aux_head is not None:
            aux = F.interpolate(self.aux_head(cond), size=target.shape[-2:], mode="bilinear", align_corners=False)
            losses["loss_aux"] = self.aux_weight * self.head.objective(aux, target)
        return None, losses

    # ------------------------------------------------------------------------- inference
    def _dense(self, images: torch.Tensor, steps: list[int], seed: int) -> DenseMaps:
        """images [B, 3, h, w] -> {steps: [probs [B, K, h, w], uncertainty [B, 1, h, w]]}."""
        cond = self.encoder(images)  # encoder once for every step count
        out: DenseMaps = {}
        preds = self.head.predict_many(cond, steps=steps, seed=seed, output_size=tuple(images.shape[-2:]))
        for s, pred in preds.items():  # one shared first decoder call for every step count
            if self.accumulate:
                probs = torch.stack([x.softmax(1) for x in pred.step_logits]).mean(0)  # [B, K, h, w]
            else:
                probs = pred.logits.softmax(1)
            out[s] = [probs, pred.uncertainty[:, None].float()]
        return out

    @property
    def steps(self) -> int:
        """Sampling steps of :meth:`predict` when none are asked for (``model.ddp.steps``)."""
        return self.head.steps

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], steps: Sequence[int] | None = None,
                seed: int = 0) -> dict[int, SegPrediction]:
        """Predictions per step count at ``batch['ori_size']`` (see :class:`SegPrediction`)."""
        maps = dense_predictions(batch, self.steps if steps is None else steps, lambda x, s: self._dense(x, s, seed),
                                 window=self.window, size_divisor=self.encoder.size_divisor, tta=self.tta)
        result = {}
        for s, (probs, uncertainty) in maps.items():
            confidence, labels = probs.max(1)
            result[s] = SegPrediction(labels=labels, confidence=confidence, uncertainty=uncertainty)
        return result
