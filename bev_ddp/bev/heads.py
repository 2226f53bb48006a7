"""BEV map segmentation heads: BEVFusion's conv head and the DDP diffusion head.

Both heads take the decoder's BEV features on the encoder grid, resample them to the map-label
grid with :class:`BEVGridTransform` and share one protocol:

* ``forward(feats, targets=None) -> (preds, losses)``: with ``targets`` ([B, K, X, Y] float masks)
  the losses are computed; ``preds`` is a :class:`BEVPrediction` or ``None`` (the DDP head does not
  sample while it trains).
* ``predict(feats, steps, seed) -> dict[int, BEVPrediction]``: one prediction per step count.

Loss (both heads, as BEVFusion): per-class sigmoid focal loss (γ = 2, α = 0.25, mean over cells),
summed over classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from bev_ddp.bev.camera.neck import conv_bn_relu
from bev_ddp.bev.grid import BEVGridTransform


@dataclass
class BEVPrediction:
    """One BEV map prediction.

    Attributes:
        probs: [B, K, X, Y] per-class sigmoid probabilities on the map-label grid.
        uncertainty: [B, X, Y] in [0, 1]: share of sampling steps whose thresholded map changed
            (zeros for the baseline head and for one step).
        step_probs: the probabilities after each sampling step (``[probs]`` for the baseline head).
    """

    probs: torch.Tensor
    uncertainty: torch.Tensor
    step_probs: list[torch.Tensor] = field(default_factory=list)


class MultiLabelFocalLoss(nn.Module):
    """Σ_k mean focal loss of class k: the BEVFusion map segmentation objective.

    Args:
        alpha: weight of the positive class (0.25).
        gamma: focusing exponent (2).
    """

    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def per_class(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target [B, K, X, Y] → [K] mean focal loss per class."""
        if logits.shape != target.shape:
            raise ValueError(f"focal loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        loss = sigmoid_focal_loss(logits, target.to(logits.dtype), alpha=self.alpha, gamma=self.gamma, reduction="none")
        return loss.mean(dim=(0, 2, 3))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_class(logits, target).sum()


class BEVSegmentationHead(nn.Module):
    """BEVFusion's head: grid transform → two 3×3 conv-BN-ReLU → 1×1 conv to K logits.

    Args:
        grid_transform: encoder grid → label grid resampling.
        in_channels: decoder channels (512 at the full config).
        classes: class names, in channel order.
        loss: the per-class focal loss.
    """

    def __init__(
        self, *, grid_transform: BEVGridTransform, in_channels: int, classes: Sequence[str], loss: MultiLabelFocalLoss
    ):
        super().__init__()
        self.classes = tuple(classes)
        self.transform = grid_transform
        self.classifier = nn.Sequential(
            conv_bn_relu(in_channels, in_channels, 3),
            conv_bn_relu(in_channels, in_channels, 3),
            nn.Conv2d(in_channels, len(self.classes), 1),
        )
        self.loss = loss

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, C, X_in, Y_in] → [B, K, X_out, Y_out] logits."""
        return self.classifier(self.transform(feats))

    def forward(
        self, feats: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[BEVPrediction, dict[str, torch.Tensor]]:
        logits = self.logits(feats)
        probs = logits.sigmoid()
        preds = BEVPrediction(probs=probs, uncertainty=probs.new_zeros(probs.shape[0], *probs.shape[2:]), step_probs=[probs])
        losses: dict[str, torch.Tensor] = {}
        if targets is not None:
            per_class = self.loss.per_class(logits, targets)
            losses = {f"loss_focal/{name}": per_class[k] for k, name in enumerate(self.classes)}
        return preds, losses

    @torch.no_grad()
    def predict(self, feats: torch.Tensor, steps: Sequence[int], seed: int = 0) -> dict[int, BEVPrediction]:
        """The same deterministic prediction for every requested step count (zero uncertainty)."""
        preds, _ = self.forward(feats)
        return {int(s): preds for s in steps}


class DDPBEVHead(nn.Module):
    """DDP map decoder as a BEV head: grid transform → :class:`bev_ddp.nn.DDPHead` on the label grid.

    The decoder denoises a multi-label class-embedding map (Embedding(K+1, 256), mean over the
    classes present in a cell) conditioned on the BEV features, and predicts K logits per cell.

    Args:
        grid_transform: encoder grid → label grid resampling of the condition.
        ddp: the diffusion head (decoder, label encoder, focal objective, schedule).
        classes: class names, in channel order.

    """

    def __init__(self, *, grid_transform: BEVGridTransform, ddp: nn.Module, classes: Sequence[str]):
        super().__init__()
        self.classes = tuple(classes)
        self.transform = grid_transform
        self.ddp = ddp

    def forward(
        self,
        feats: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        self_aligned: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[BEVPrediction | None, dict[str, torch.Tensor]]:
        """With ``targets``: (None, {"loss_ddp": ...}) — Alg. 1, or Alg. 4 when ``self_aligned``;
        without: (one-step prediction, {})."""
        cond = self.transform(feats)  # [B, C, X_out, Y_out]
        if targets is None:
            return self._sample(cond, steps=[1], seed=0)[1], {}
        losses = self.ddp.loss(cond, targets, self_aligned=self_aligned, generator=generator)
        return None, dict(losses)

    def _sample(self, cond: torch.Tensor, steps: Sequence[int], seed: int) -> dict[int, BEVPrediction]:
        outputs = self.ddp.predict_many(cond, steps=steps, seed=seed)  # one shared first decoder call
        return {
            num_steps: BEVPrediction(probs=out.logits.sigmoid(), uncertainty=out.uncertainty,
                                     step_probs=[logits.sigmoid() for logits in out.step_logits])
            for num_steps, out in outputs.items()
        }

    @torch.no_grad()
    def predict(self, feats: torch.Tensor, steps: Sequence[int], seed: int = 0) -> dict[int, BEVPrediction]:
        """One DDIM sampling run per step count, all from the same seeded noise (first decoder call shared)."""
        return self._sample(self.transform(feats), steps, seed)
