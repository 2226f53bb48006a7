"""Change-count uncertainty map of DDP (paper Sec. 4.1, Fig. 3c).

For every pixel count how often the discretised prediction changes from one sampling step to
the next, then normalise to [0, 1] by the number of step transitions (``steps - 1``):
0 = the prediction never changed, 1 = it changed at every step.  With one step there is no
transition and the map is all zeros.  For multi-channel predictions (multi-label BEV masks,
[B, K, H, W]) a pixel changes when any channel flips.
"""
from __future__ import annotations

from typing import Sequence

import torch

from bev_ddp.errors import InputError


def change_count_uncertainty(step_predictions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Normalised per-pixel change count.

    Args:
        step_predictions: discretised predictions of consecutive sampling steps, each
            [B, H, W] (class index) or [B, C, H, W] (masks / bins), all of one shape.
    Returns:
        float32 [B, H, W] in [0, 1]: (number of changes) / (steps - 1); zeros for one step.
    """
    if len(step_predictions) == 0:
        raise InputError("change_count_uncertainty needs at least one step prediction")
    first = step_predictions[0]
    if first.dim() not in (3, 4):
        raise InputError(f"step predictions must be [B, H, W] or [B, C, H, W], got {tuple(first.shape)}")
    for i, pred in enumerate(step_predictions):
        if pred.shape != first.shape:
            raise InputError(f"step prediction {i} has shape {tuple(pred.shape)}, step 0 has {tuple(first.shape)}")
    b, h, w = first.shape[0], first.shape[-2], first.shape[-1]
    counts = torch.zeros((b, h, w), dtype=torch.float32, device=first.device)
    for prev, cur in zip(step_predictions[:-1], step_predictions[1:]):
        changed = prev != cur
        if changed.dim() == 4:
            changed = changed.any(dim=1)  # [B, C, H, W] -> [B, H, W]
        counts += changed
    return counts / max(len(step_predictions) - 1, 1)


# -- estimators over K noise draws x S sampling steps -------------------------------------------
# Multi-label maps (BEV): every class channel is its own binary prediction p = sigmoid(logit), so
# every estimator below is defined per class (a [D, B, K, H, W] input gives [B, K, H, W]); a
# per-pixel map follows from the maximum over classes (:func:`pixel_max`).  Entropies are in
# bits, so every estimator lies in [0, 1].
#
#   symbol  name here
#   p_d     draw_probs[d]: the final-step probability of noise draw d (d = 1..D)
#   p̄       mean over draws of p_d (the prediction the map is thresholded from)
#   H(p)    binary_entropy(p) = -p log2 p - (1-p) log2 (1-p)
#   MI      H(p̄) - mean_d H(p_d)   (BALD: mutual information between the map and the noise draw)

_TINY = 1e-12


def _check_draws(draw_probs: torch.Tensor) -> torch.Tensor:
    if not isinstance(draw_probs, torch.Tensor) or draw_probs.dim() < 2:
        raise InputError("draw probabilities must be a tensor [D, ...] with one entry per noise draw")
    if draw_probs.shape[0] < 1:
        raise InputError("draw probabilities need at least one draw")
    return draw_probs.float()


def binary_entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(p) in bits of a Bernoulli(p), elementwise: 0 at p in {0, 1}, 1 at p = 0.5."""
    p = probs.float().clamp(0.0, 1.0)
    q = 1.0 - p
    return -(p * torch.log2(p.clamp_min(_TINY)) + q * torch.log2(q.clamp_min(_TINY)))


def entropy_of_mean(draw_probs: torch.Tensor) -> torch.Tensor:
    """[D, ...] per-draw probabilities -> [...] H(p̄) in bits (total predictive uncertainty).

    With one draw this is the entropy of the model's own probability (no extra decoder call).
    """
    return binary_entropy(_check_draws(draw_probs).mean(dim=0))


def mutual_information(draw_probs: torch.Tensor) -> torch.Tensor:
    """[D, ...] -> [...] H(p̄) - mean_d H(p_d) in bits, >= 0 (Jensen); 0 when the draws agree.

    The part of the predictive entropy that comes from the noise draw (BALD); 0 for one draw.
    """
    p = _check_draws(draw_probs)
    mi = binary_entropy(p.mean(dim=0)) - binary_entropy(p).mean(dim=0)
    return mi.clamp_min(0.0)  # float round-off only


def draw_variance(draw_probs: torch.Tensor) -> torch.Tensor:
    """[D, ...] -> [...] 4 x population variance of p_d over draws, in [0, 1] (0.25 is the maximum)."""
    p = _check_draws(draw_probs)
    return (4.0 * p.var(dim=0, unbiased=False)).clamp(0.0, 1.0)


def draw_disagreement(draw_probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """[D, ...] -> [...] 2 min(m, 1 - m), m = share of draws with p_d >= threshold.

    0 when every draw thresholds the same way, 1 when the draws split evenly.
    """
    p = _check_draws(draw_probs)
    m = (p >= threshold).float().mean(dim=0)
    return 2.0 * torch.minimum(m, 1.0 - m)


def per_class_change_count(step_probs: Sequence[torch.Tensor], threshold: float = 0.5) -> torch.Tensor:
    """Change count of each class's thresholded mask, per class.

    Args:
        step_probs: S tensors [B, K, H, W] of probabilities, one per sampling step.
    Returns:
        [B, K, H, W] in [0, 1]: changes of ``p >= threshold`` between consecutive steps / (S - 1).
    """
    if len(step_probs) == 0:
        raise InputError("per_class_change_count needs at least one step")
    masks = torch.stack([p >= threshold for p in step_probs])  # [S, B, K, H, W]
    if masks.shape[0] == 1:
        return torch.zeros(masks.shape[1:], dtype=torch.float32, device=masks.device)
    return (masks[1:] != masks[:-1]).float().sum(dim=0) / (masks.shape[0] - 1)


def error_probability(draw_probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """[D, ...] -> [...] min(p̄, 1 - p̄): the chance that the mask ``p̄ >= 0.5`` is wrong if p̄ is calibrated.

    Per class it ranks cells exactly as :func:`entropy_of_mean` (both fall with |p̄ - 0.5|); it
    differs in how classes combine into a pixel (:func:`pixel_any`).
    """
    p = _check_draws(draw_probs).mean(dim=0)
    return torch.where(p >= threshold, 1.0 - p, p)


def pixel_max(per_class: torch.Tensor) -> torch.Tensor:
    """[B, K, H, W] per-class uncertainty -> [B, H, W]: the most uncertain class of each pixel."""
    return per_class.amax(dim=1)


def pixel_any(per_class: torch.Tensor) -> torch.Tensor:
    """[B, K, H, W] per-class error probabilities -> [B, H, W] 1 - Π_k (1 - e_k): the chance that
    any class is wrong, classes taken as independent."""
    return 1.0 - torch.prod(1.0 - per_class.clamp(0.0, 1.0), dim=1)


ESTIMATORS = ("change_count", "entropy", "error_probability", "mutual_information", "variance", "disagreement")
# how an estimator's per-class map becomes a pixel score (default :func:`pixel_max`)
PIXEL_REDUCTIONS = {"error_probability": pixel_any}


def multilabel_estimators(draw_step_probs: Sequence[Sequence[torch.Tensor]], threshold: float = 0.5
                          ) -> dict[str, torch.Tensor]:
    """Every per-class estimator of one multi-label prediction from D draws x S steps.

    Args:
        draw_step_probs: ``draw_step_probs[d][s]`` = probabilities [B, K, H, W] of draw d after
            step s (the same number of steps for every draw).
        threshold: where a class's mask switches on (0.5).
    Returns:
        ``{name: [B, K, H, W] in [0, 1]}`` for the names in :data:`ESTIMATORS`:
        ``change_count`` (mean over draws of :func:`per_class_change_count`),
        ``entropy`` (:func:`entropy_of_mean` of the final steps), ``error_probability``, ``mutual_information``,
        ``variance`` and ``disagreement`` of the final steps (zero for one draw).
    """
    if len(draw_step_probs) == 0 or any(len(s) == 0 for s in draw_step_probs):
        raise InputError("multilabel_estimators needs at least one draw with at least one step")
    if len({len(s) for s in draw_step_probs}) != 1:
        raise InputError("every draw must have the same number of steps")
    final = torch.stack([steps[-1] for steps in draw_step_probs]).float()  # [D, B, K, H, W]
    change = torch.stack([per_class_change_count(steps, threshold) for steps in draw_step_probs]).mean(dim=0)
    return {
        "change_count": change,
        "entropy": entropy_of_mean(final),
        "error_probability": error_probability(final, threshold),
        "mutual_information": mutual_information(final),
        "variance": draw_variance(final),
        "disagreement": draw_disagreement(final, threshold),
    }
