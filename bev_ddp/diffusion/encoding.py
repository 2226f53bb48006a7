"""Label encoders of DDP: ground truth / predictions -> continuous maps in [-scale, scale].

Diffusion runs on continuous maps, so discrete labels are encoded first (paper Sec. 3.3,
Table 5a/5b).  Every encoder offers the same three calls:

* ``encode(target, size)``: ground truth at full resolution -> [B, channels, h, w] map at the
  condition resolution ``size = (h, w)``; label maps are downsampled by nearest neighbour,
  sparse depth by a valid-mask-aware mean (invalid zeros are never blended in).
* ``discretize(logits)``: decoder output -> the discrete prediction (argmax, threshold at
  probability 0.5, or depth bins) whose step-to-step changes define the uncertainty map.
* ``encode_prediction(logits)``: the prediction encoded like ground truth, at the logits'
  resolution (labels: ``encode(discretize(logits))``; continuous values: the decoded value,
  not binned); the DDIM step (Alg. 3) and self-aligned denoising (Alg. 4) feed it back.

Target conventions (from the task contracts):

* single-label segmentation: int tensor [B, H, W], classes 0..K-1, ``ignore_index`` (255) = unlabeled;
* multi-label BEV maps: bool / {0, 1} float tensor [B, K, H, W];
* depth: float tensor [B, 1, H, W] in metres, 0 = invalid.

``channels`` is the encoded map's channel count (the decoder's ``map_channels``) and
``out_channels`` the decoder output channels the encoder expects.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.diffusion.value_checks import check_finite, value_checks_enabled
from bev_ddp.errors import InputError

INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_scale(scale: float) -> float:
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise InputError(f"encoder scale must be a positive finite number, got {scale!r}")
    return float(scale)


def _check_logits(logits: torch.Tensor, channels: int, who: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"{who} logits must be a float tensor [B, {channels}, H, W], got {shape}")
    if logits.shape[1] != channels:
        raise InputError(f"{who} logits must have {channels} channels, got shape {tuple(logits.shape)}")


TARGET_POOLINGS = ("nearest", "max")
REENCODINGS = ("threshold", "soft")
MULTI_LABEL_ENCODINGS = ("class_embedding", "one_hot")  # BEV: model.head.ddp.label_encoding


def resize_nearest(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Nearest-neighbour resize of a [B, C, H, W] label tensor (pixel-centre sampling)."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=tuple(size), mode="nearest-exact").to(x.dtype)


def _resize_max(mask: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bool masks [B, K, H, W] -> [B, K, h, w]: a cell is set when any fine cell it covers is set
    (``adaptive_max_pool2d``; exact cover when H, W are multiples of h, w).  Upsampling stays nearest."""
    if size is None or tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if size[0] > mask.shape[-2] or size[1] > mask.shape[-1]:
        return resize_nearest(mask, size)
    return F.adaptive_max_pool2d(mask.float(), tuple(size)) > 0.5


def resize_probabilities(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Probabilities [B, K, H, W] -> [B, K, h, w]: area mean when shrinking, bilinear when growing."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    if size[0] <= probs.shape[-2] and size[1] <= probs.shape[-1]:
        return F.adaptive_avg_pool2d(probs, tuple(size))
    return F.interpolate(probs, size=tuple(size), mode="bilinear", align_corners=False)


class LabelEncoder(nn.Module):
    """Common interface of the discrete-label encoders (single- or multi-label).

    Args:
        num_classes: K.
        scale: the encoded map lies in [-scale, scale] (controls the SNR, Table 5b).
        multi_label: targets are [B, K, H, W] masks (BEV) instead of [B, H, W] indices.
        ignore_index: unlabeled value of single-label targets.
        target_pooling: how a multi-label target is shrunk to the condition grid: ``"nearest"``
            (the fine cell at each coarse cell's centre; a one-cell-wide line survives in half the
            coarse cells or none) or ``"max"`` (a coarse cell holds a class when any of its fine
            cells does).  Single-label targets are always resized nearest.
    """

    def __init__(self, *, num_classes: int, scale: float, multi_label: bool = False,
                 ignore_index: int = 255, target_pooling: str = "nearest") -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"encoder num_classes must be a positive integer, got {num_classes!r}")
        if target_pooling not in TARGET_POOLINGS:
            raise InputError(f"target_pooling must be one of {', '.join(TARGET_POOLINGS)}, got {target_pooling!r}")
        self.target_pooling = target_pooling
        self.num_classes = num_classes
        self.scale = _check_scale(scale)
        self.multi_label = bool(multi_label)
        self.ignore_index = int(ignore_index)
        self.channels = num_classes  # overridden by encoders whose code width differs
        self.out_channels = num_classes

    # -- targets -----------------------------------------------------------------------------
    def prepare_target(self, target: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Validate ``target`` and resize it (nearest) to ``size``.

        Returns:
            multi-label: bool [B, K, h, w]; single-label: int64 [B, h, w] with ignore -> K.
        """
        if not isinstance(target, torch.Tensor):
            raise InputError(f"target must be a torch.Tensor, got {type(target).__name__}")
        k = self.num_classes
        if self.multi_label:
            if target.dim() != 4 or target.shape[1] != k:
                raise InputError(f"multi-label target must have shape [B, {k}, H, W], got {tuple(target.shape)}")
            check_finite("multi-label target", target)
            resize = _resize_max if self.target_pooling == "max" else resize_nearest
            return resize(target > 0.5, size)
        if target.dim() != 3:
            raise InputError(f"single-label target must have shape [B, H, W], got {tuple(target.shape)}")
        if target.dtype not in INTEGER_DTYPES:
            raise InputError(f"single-label target must have an integer dtype, got {target.dtype}")
        target = target.long()
        valid = (target >= 0) & ((target < k) | (target == self.ignore_index))
        if value_checks_enabled() and not bool(valid.all()):
            bad = target[~valid][0].item()
            raise InputError(
                f"single-label target holds {bad}, outside classes 0..{k - 1} and ignore {self.ignore_index}"
            )
        idx = torch.where(target == self.ignore_index, torch.full_like(target, k), target)
        return resize_nearest(idx[:, None], size)[:, 0]  # [B, h, w]

    def discretize(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder logits [B, K, H, W] -> bool [B, K, H, W] (prob >= 0.5) or int64 [B, H, W] (argmax)."""
        _check_logits(logits, self.out_channels, type(self).__name__)
        return logits >= 0 if self.multi_label else logits.argmax(dim=1)

    # -- encoding ----------------------------------------------------------------------------
    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Discrete labels as returned by :meth:`prepare_target` / :meth:`discretize` -> [B, D, h, w]."""
        raise NotImplementedError

    def encode(self, target: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Ground truth -> [B, channels, h, w] map in [-scale, scale] at ``size`` (default: target size)."""
        return self.encode_labels(self.prepare_target(target, size))

    def encode_prediction(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder logits [B, K, h, w] -> encoded discretised prediction [B, channels, h, w]."""
        return self.encode_labels(self.discretize(logits))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder logits [B, K, H, W] -> class probabilities [B, K, H, W] (sigmoid or softmax)."""
        _check_logits(logits, self.out_channels, type(self).__name__)
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)

    def encode_probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, K, h, w] -> the probability-weighted encoding [B, channels, h, w]:
        the expected label code under ``probs`` (equal to :meth:`encode_labels` on 0/1 masks or one-hot
        probabilities); the ``soft`` re-encoding between sampling steps."""
        raise InputError(f"{type(self).__name__} has no probability-weighted encoding")


class ClassEmbeddingEncoder(LabelEncoder):
    """Learned class embedding (paper's best, Table 5a): ``(sigmoid(E[c]) * 2 - 1) * scale``.

    ``E = nn.Embedding(K + 1, dims)``.  Single-label: ``E[c]`` per pixel, row K for ignored
    pixels.  Multi-label (BEV): the mean over the K class channels of ``E[mask_k * (k + 1)]``
    (row 0 = "absent"), computed as ``E[0] + mean_k mask_k (E[k+1] - E[0])`` without building
    the [B, K, H, W, dims] tensor.

    Args:
        num_classes: K.  dims: embedding width D (the decoder's map_channels).
        scale: 0.01 in the paper.
    """

    def __init__(self, *, num_classes: int, dims: int = 256, scale: float = 0.01, multi_label: bool = False,
                 ignore_index: int = 255, target_pooling: str = "nearest") -> None:
        super().__init__(num_classes=num_classes, scale=scale, multi_label=multi_label, ignore_index=ignore_index,
                         target_pooling=target_pooling)
        self.embedding = nn.Embedding(num_classes + 1, dims)
        self.channels = dims

    def encode_probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        if self.multi_label:  # E[0] + mean_k p_k (E[k+1] - E[0]): linear in the masks, so p replaces them
            return self.encode_labels(probs)
        table = self.embedding.weight[: self.num_classes]  # [K, D]; the ignore row is never predicted
        emb = torch.einsum("bkhw,kd->bdhw", probs.to(table.dtype), table)  # [B, D, h, w]
        return (torch.sigmoid(emb) * 2 - 1) * self.scale

    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        table = self.embedding.weight  # [K+1, D]
        if self.multi_label:
            delta = table[1:] - table[0]  # [K, D]
            mean = torch.einsum("bkhw,kd->bdhw", labels.to(table.dtype), delta) / self.num_classes
            emb = mean + table[0][None, :, None, None]  # [B, D, h, w]
        else:
            emb = F.embedding(labels, table).permute(0, 3, 1, 2)  # [B, h, w, D] -> [B, D, h, w]
        return (torch.sigmoid(emb) * 2 - 1) * self.scale


class OneHotEncoder(LabelEncoder):
    """One-hot code scaled to {-scale, +scale} (Table 5a; scale 0.1).  Ignored pixels are all -scale."""

    def encode_probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        return (probs.float() * 2 - 1) * self.scale  # [B, K, h, w]

    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            bits = labels.float()  # [B, K, h, w]
        else:
            bits = F.one_hot(labels, self.num_classes + 1)[..., : self.num_classes]  # [B, h, w, K]
            bits = bits.permute(0, 3, 1, 2).float()  # [B, K, h, w]
        return (bits * 2 - 1) * self.scale


class AnalogBitsEncoder(LabelEncoder):
    """Analog bits (Chen et al. 2023; Table 5a; scale 0.1): the class index as ceil(log2(K+1)) bits.

    Single-label only; the ignore label is code K (never predicted).  Bit 0 is the least significant.
    """

    def __init__(self, *, num_classes: int, scale: float = 0.1, ignore_index: int = 255) -> None:
        super().__init__(num_classes=num_classes, scale=scale, multi_label=False, ignore_index=ignore_index)
        self.channels = max(1, math.ceil(math.log2(num_classes + 1)))

    def encode_labels(self, labels: torch.Tensor) -> torch.Tensor:
        shifts = torch.arange(self.channels, device=labels.device)
        bits = (labels[..., None] >> shifts) & 1  # [B, h, w, nbits]
        return (bits.permute(0, 3, 1, 2).float() * 2 - 1) * self.scale  # [B, nbits, h, w]

    def decode_bits(self, encoded: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode_labels`: [B, nbits, h, w] -> int64 class index [B, h, w]."""
        bits = (encoded > 0).long()
        weights = (2 ** torch.arange(self.channels, device=encoded.device))[None, :, None, None]
        return (bits * weights).sum(1)


class ContinuousEncoder(nn.Module):
    """Continuous values (depth, Sec. 4.4): ``((d - min) / (max - min) * 2 - 1) * scale``.

    The decoder output is read as the logit of the normalised value:
    ``decode(logits) = min + sigmoid(logits) * (max - min)`` (metres for depth), so
    ``encode_prediction(logits) = (2 sigmoid(logits) - 1) * scale == encode(decode(logits))``.
    Ground truth is sparse (0 = invalid): downsampling averages valid pixels only, and a cell
    with no valid pixel is encoded as 0 (the middle of the range, i.e. "no information").
    ``discretize`` quantises the normalised value into ``num_bins`` bins; a change of bin between
    sampling steps counts as a change for the uncertainty map.

    Args:
        min_value, max_value: value range (e.g. 1e-3 and 80 m for KITTI).
        scale: 0.1 in the paper.  num_bins: bins used by ``discretize``.
    """

    multi_label = False

    def __init__(self, *, min_value: float, max_value: float, scale: float = 0.1, num_bins: int = 256) -> None:
        super().__init__()
        if not (math.isfinite(min_value) and math.isfinite(max_value) and max_value > min_value):
            raise InputError(f"ContinuousEncoder needs finite min_value < max_value, got {min_value}, {max_value}")
        if not isinstance(num_bins, int) or num_bins < 2:
            raise InputError(f"ContinuousEncoder num_bins must be an integer >= 2, got {num_bins!r}")
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        self.scale = _check_scale(scale)
        self.num_bins = num_bins
        self.channels = 1
        self.out_channels = 1

    def prepare_target(self, target: torch.Tensor, size: tuple[int, int] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate and mask-aware downsample depth [B, 1, H, W] -> (values, valid) at ``size``."""
        if not isinstance(target, torch.Tensor) or target.dim() != 4 or target.shape[1] != 1:
            shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
            raise InputError(f"continuous target must have shape [B, 1, H, W], got {shape}")
        if not target.is_floating_point():
            raise InputError(f"continuous target must be floating point, got {target.dtype}")
        check_finite("continuous target", target)
        if value_checks_enabled() and bool((target < 0).any()):
            raise InputError("continuous target holds negative values (0 marks invalid pixels)")
        valid = (target > 0).to(target.dtype)
        if size is None or tuple(target.shape[-2:]) == tuple(size):
            return target, valid > 0
        weight = F.adaptive_avg_pool2d(valid, tuple(size))  # [B, 1, h, w] fraction of valid pixels
        total = F.adaptive_avg_pool2d(target * valid, tuple(size))
        values = torch.where(weight > 0, total / weight.clamp_min(1e-12), torch.zeros_like(total))
        return values, weight > 0

    def normalise(self, values: torch.Tensor) -> torch.Tensor:
        """Values -> [-1, 1] (clamped)."""
        return ((values - self.min_value) / (self.max_value - self.min_value) * 2 - 1).clamp(-1, 1)

    def encode(self, target: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Depth [B, 1, H, W] -> [B, 1, h, w] in [-scale, scale]; invalid cells -> 0."""
        values, valid = self.prepare_target(target, size)
        return torch.where(valid, self.normalise(values), torch.zeros_like(values)) * self.scale

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, 1, H, W] -> values in (min_value, max_value)."""
        _check_logits(logits, 1, "ContinuousEncoder")
        return self.min_value + torch.sigmoid(logits) * (self.max_value - self.min_value)

    def encode_prediction(self, logits: torch.Tensor) -> torch.Tensor:
        _check_logits(logits, 1, "ContinuousEncoder")
        return (torch.sigmoid(logits) * 2 - 1) * self.scale

    def discretize(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output [B, 1, H, W] -> int64 bin index [B, 1, H, W] in 0..num_bins-1."""
        _check_logits(logits, 1, "ContinuousEncoder")
        return (torch.sigmoid(logits) * self.num_bins).long().clamp_(max=self.num_bins - 1)


MapEncoder = LabelEncoder | ContinuousEncoder


def build_multi_label_encoder(kind: str, *, num_classes: int, dims: int, scale: float,
                              target_pooling: str = "nearest") -> LabelEncoder:
    """The multi-label (BEV) map encoder named by ``kind`` (one of :data:`MULTI_LABEL_ENCODINGS`).

    ``class_embedding``: :class:`ClassEmbeddingEncoder`, ``dims`` wide; a cell's code is the mean
    over the K classes, so one class moves it by 1/K of its embedding (the authors').
    ``one_hot``: :class:`OneHotEncoder`, one channel per class at ±scale; ``dims`` must be K.
    """
    if kind not in MULTI_LABEL_ENCODINGS:
        raise InputError(f"label_encoding must be one of {', '.join(MULTI_LABEL_ENCODINGS)}, got {kind!r}")
    if kind == "one_hot":
        if dims != num_classes:
            raise InputError(f"map_channels must equal the number of classes ({num_classes}) with label_encoding "
                             f"one_hot, got {dims}")
        return OneHotEncoder(num_classes=num_classes, scale=scale, multi_label=True, target_pooling=target_pooling)
    return ClassEmbeddingEncoder(num_classes=num_classes, dims=dims, scale=scale, multi_label=True,
                                 target_pooling=target_pooling)
