"""BEV map segmentation heads: BEVFusion's conv head and the DDP diffusion head.

Both heads take the decoder's BEV features on the encoder grid, resample them to the map-label
grid with :class:`BEVGridTransform` and share one protocol:

* ``forward(feats, targets=None) -> (preds, losses)``: with ``targets`` ([B, K, X, Y] float masks)
  the losses are computed; ``preds`` is a :class:`BEVPrediction` or ``None`` (the DDP head does not
  sample while it trains).
* ``predict(feats, steps=None, seed=0) -> dict[int, BEVPrediction]``: one prediction per step count;
  ``steps=None``: the head's ``steps`` (``model.head.ddp.steps`` for DDP, 1 for the conv head).

Loss (both heads): per-class sigmoid focal loss (γ = 2, mean over cells), summed over classes.
BEVFusion and DDP use no α weighting (α = -1, the reference configs); ``model.head.focal_alpha``
selects it (see ``configs/bev/reference/README.md``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from bev_ddp.nn.layers import conv_bn_relu
from bev_ddp.bev.grid import BEVGridTransform
from bev_ddp.diffusion.sampler import check_step_counts
from bev_ddp.errors import InputError


@dataclass
class BEVPrediction:
    """One BEV map prediction.

    Attributes:
        probs: [B, K, X, Y] per-class sigmoid probabilities on the map-label grid.
        uncertainty: [B, X, Y] in [0, 1]: share of sampling steps whose thresholded map changed
            (zeros for the baseline head and for one step).
        step_probs: the probabilities after each sampling step (``[probs]`` for the baseline head);
            with K noise draws, the mean over draws.
        draw_step_probs: ``[draw][step]`` probabilities [B, K, X, Y] when the head ran more than one
            noise draw (empty otherwise): what the across-draw uncertainty estimators read.
    """

    probs: torch.Tensor
    uncertainty: torch.Tensor
    step_probs: list[torch.Tensor] = field(default_factory=list)
    draw_step_probs: list[list[torch.Tensor]] = field(default_factory=list)


class MultiLabelFocalLoss(nn.Module):
    """Σ_k mean focal loss of class k: the BEVFusion map segmentation objective.

    Args:
        alpha: weight of the positive class, negatives get ``1 - alpha``; ``alpha < 0``: no
            weighting (BEVFusion's and DDP's ``-1``).
        gamma: focusing exponent (2).
    """

    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def per_class(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits, target [B, K, X, Y] → [K] mean focal loss per class."""
        if logits.shape != target.shape:
            raise InputError(f"focal loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
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

    steps = 1  # one deterministic pass: every step count gives the same map

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
    def predict(self, feats: torch.Tensor, steps: Sequence[int] | None = None, seed: int = 0) -> dict[int, BEVPrediction]:
        """The same deterministic prediction for every requested step count (zero uncertainty)."""
        counts = [self.steps] if steps is None else check_step_counts(steps)
        preds, _ = self.forward(feats)
        return {s: preds for s in counts}


NOISE_GRIDS = ("label", "encoder")
EVAL_PROTOCOLS = ("last_step", "mean_draws", "mean_draws_steps")


def protocol_label(eval_protocol: str, draws: int = 1) -> str:
    """How the reported probabilities were made, for reports (a figure is comparable only with
    figures of the same protocol)."""
    if eval_protocol == "last_step":
        return "DDP: last step of 1 draw"
    of = f"{draws} draw" if draws == 1 else f"{draws} draws"
    if eval_protocol == "mean_draws":
        return f"DDP: mean sigmoid of {of}, last step"
    return f"DDP: mean sigmoid of {of} x all steps"


class DDPBEVHead(nn.Module):
    """DDP map decoder as a BEV head: grid transform → :class:`bev_ddp.nn.DDPHead` on the label grid.

    The decoder denoises a multi-label class-embedding map (Embedding(K+1, 256), mean over the
    classes present in a cell) conditioned on the BEV features, and predicts K logits per cell.

    Args:
        grid_transform: encoder grid → label grid resampling of the condition.
        ddp: the diffusion head (decoder, label encoder, focal objective, schedule).
        classes: class names, in channel order.
        noise_grid: ``"label"``: the condition is resampled to the label grid and the noisy map
            lives there (ours); ``"encoder"``: the condition stays on the encoder grid, the noisy
            map too (ground truth downsampled nearest), and the decoder resamples after its fuse
            conv (its ``fuse_transform``: the DDP authors').
        decoder_grid: ``"label"``: the decoder's layers run on the label grid (both noise grids);
            ``"encoder"`` (with ``noise_grid="encoder"``): the whole decoder runs on the encoder grid
            and its logits are resized bilinearly to the label grid (in the loss too): the fewest
            queries (128² instead of 200² at the full config).
        eval_protocol: ``"last_step"``: the probabilities of the last step of one draw (ours);
            ``"mean_draws"``: the mean sigmoid of the last step over ``eval_draws`` noise draws (what
            ``bev-ddp bench frontier`` scores); ``"mean_draws_steps"``: the mean sigmoid over
            ``eval_draws`` noise draws × every step (the DDP authors' published figures).  The draws
            run as one batch (:meth:`sample`).
        eval_draws: noise draws K of the ``mean_draws*`` protocols (draw r uses seed ``seed + r``).
    """

    def __init__(self, *, grid_transform: BEVGridTransform, ddp: nn.Module, classes: Sequence[str],
                 noise_grid: str = "label", decoder_grid: str = "label", eval_protocol: str = "last_step",
                 eval_draws: int = 1):
        super().__init__()
        self.check_settings(noise_grid=noise_grid, decoder_grid=decoder_grid, eval_protocol=eval_protocol,
                            eval_draws=eval_draws)
        self.classes = tuple(classes)
        self.transform = grid_transform
        self.ddp = ddp
        self.noise_grid, self.decoder_grid = noise_grid, decoder_grid
        self.eval_protocol, self.eval_draws = eval_protocol, int(eval_draws)
        # (X, Y) the decoder's logits are resized to when it runs on the encoder grid; None: it outputs the label grid
        self.output_size = tuple(grid_transform.output_size) if decoder_grid == "encoder" else None

    @staticmethod
    def check_settings(*, noise_grid: str, decoder_grid: str, eval_protocol: str, eval_draws: int) -> None:
        """Raise :class:`InputError` for a bad setting; each message starts with the setting's name."""
        if noise_grid not in NOISE_GRIDS:
            raise InputError(f"noise_grid must be one of {', '.join(NOISE_GRIDS)}, got {noise_grid!r}")
        if decoder_grid not in NOISE_GRIDS:
            raise InputError(f"decoder_grid must be one of {', '.join(NOISE_GRIDS)}, got {decoder_grid!r}")
        if decoder_grid == "encoder" and noise_grid != "encoder":
            raise InputError(f"decoder_grid encoder needs noise_grid encoder (the decoder runs where its noisy map "
                             f"lives), got noise_grid {noise_grid!r}")
        if eval_protocol not in EVAL_PROTOCOLS:
            raise InputError(f"eval_protocol must be one of {', '.join(EVAL_PROTOCOLS)}, got {eval_protocol!r}")
        if eval_draws < 1 or (eval_protocol == "last_step" and eval_draws != 1):
            raise InputError(f"eval_draws must be >= 1 (1 with last_step), got {eval_draws}")

    @property
    def steps(self) -> int:
        """Sampling steps of a prediction when none are asked for (``model.head.ddp.steps``)."""
        return self.ddp.steps

    @property
    def protocol_label(self) -> str:
        """The evaluation protocol in words (:func:`protocol_label`)."""
        return protocol_label(self.eval_protocol, self.eval_draws)

    def condition(self, feats: torch.Tensor) -> torch.Tensor:
        """Decoder features → the decoder's condition (on the label or the encoder grid)."""
        return self.transform(feats) if self.noise_grid == "label" else feats

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
        cond = self.condition(feats)  # [B, C, X, Y] on the label or the encoder grid
        if targets is None:
            return self.sample(cond, steps=[1], seed=0)[1], {}
        losses = self.ddp.loss(cond, targets, self_aligned=self_aligned, generator=generator)
        return None, dict(losses)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: Sequence[int] | None = None, seed: int = 0, *,
               draws: int | None = None, eval_protocol: str | None = None) -> dict[int, BEVPrediction]:
        """K noise draws × one DDIM run per step count from the condition (:meth:`condition`).

        The K draws run as one batch [K·B, ...]: draw r of every sample starts from seed ``seed + r``,
        so draw 0 is the one-draw prediction; the first decoder call is shared by every step count.

        Args:
            cond: [B, C, X, Y] condition on the noise grid.
            steps: step counts (``None``: the head's ``steps``).
            draws / eval_protocol: K and how the probabilities are combined (default: the head's
                ``eval_draws`` / ``eval_protocol``; see the class docstring).
        Returns:
            ``{step count: BEVPrediction}``; ``draw_step_probs`` is filled for K > 1.
        """
        draws = self.eval_draws if draws is None else int(draws)
        protocol = self.eval_protocol if eval_protocol is None else eval_protocol
        if protocol not in EVAL_PROTOCOLS or draws < 1:
            raise InputError(f"eval_protocol must be one of {', '.join(EVAL_PROTOCOLS)} and draws >= 1, "
                             f"got {protocol!r} and {draws}")
        b = cond.shape[0]
        seeds = [seed + r for r in range(draws) for _ in range(b)]  # draw-major
        cond_k = cond.repeat(draws, 1, 1, 1) if draws > 1 else cond  # [K·B, C, X, Y]
        outputs = self.ddp.predict_many(cond_k, steps=steps, seed=seeds if draws > 1 else seed,
                                        output_size=self.output_size)  # shared first call
        results = {}
        for num_steps, out in outputs.items():
            step_probs = [logits.sigmoid().view(draws, b, *logits.shape[1:]) for logits in out.step_logits]
            uncertainty = out.uncertainty.view(draws, b, *out.uncertainty.shape[1:]).mean(0)  # [B, X, Y]
            if protocol == "last_step":
                probs = step_probs[-1][0]
            elif protocol == "mean_draws":
                probs = step_probs[-1].mean(0)  # mean over draws of the last step [B, K, X, Y]
            else:
                probs = torch.stack(step_probs).mean(dim=(0, 1))  # mean over steps and draws [B, K, X, Y]
            per_draw = [[p[r] for p in step_probs] for r in range(draws)] if draws > 1 else []
            results[num_steps] = BEVPrediction(probs=probs, uncertainty=uncertainty,
                                               step_probs=[p.mean(0) for p in step_probs], draw_step_probs=per_draw)
        return results

    @torch.no_grad()
    def predict(self, feats: torch.Tensor, steps: Sequence[int] | None = None, seed: int = 0) -> dict[int, BEVPrediction]:
        """One DDIM sampling run per step count (``None``: the head's ``steps``), all from the same
        seeded noise (first decoder call shared; K draws for the ``mean_draws*`` protocols)."""
        return self.sample(self.condition(feats), steps, seed)
