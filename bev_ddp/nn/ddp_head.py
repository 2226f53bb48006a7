"""DDP head: map decoder + label encoder + noise schedule + DDIM sampler (paper Alg. 1, 2, 4).

* :meth:`DDPHead.loss` - Alg. 1: encode the ground truth at the condition resolution, noise it
  at ``t ~ U(0, 0.999)``, predict the clean map, resize the logits bilinearly to the ground
  truth's size and apply the task objective.  ``self_aligned=True`` is Alg. 4: the map that
  gets noised is the model's own one-step prediction from pure noise (no gradient through that
  pass) instead of the ground truth; used to fine-tune against sampling drift.
* :meth:`DDPHead.predict` - Alg. 2: DDIM from pure noise for ``steps`` decoder calls (default: the
  head's ``steps``, the config's ``steps`` key), returning
  the final logits, every step's logits (dynamic inference) and the change-count uncertainty.

Time input: the sampler and the training loss draw times ``t`` in [0, 1]; :meth:`DDPHead.decoder_time`
is the one place that turns them into what the decoder's time embedding reads: ``log_snr(t)``
(``time_input="log_snr"``, ours and the DDP authors' segmentation and BEV models) or ``t`` itself
(``"t"``, the DDP authors' depth model).  The clamped log-SNR is never inverted back to ``t``.

Sampling noise: with an integer ``seed`` every sample of the batch starts from the same noise
map drawn from ``torch.Generator().manual_seed(seed)`` on the CPU, so a sample's prediction
depends only on its condition and the seed - not on the batch size, its position in the batch,
the number of ranks or the device's random number generator.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bev_ddp.diffusion.encoding import (REENCODINGS, AnalogBitsEncoder, LabelEncoder, MapEncoder,
                                        resize_probabilities)
from bev_ddp.diffusion.sampler import DDIMSampler, check_step_counts
from bev_ddp.diffusion.schedule import NoiseSchedule
from bev_ddp.diffusion.uncertainty import change_count_uncertainty
from bev_ddp.diffusion.value_checks import check_finite
from bev_ddp.errors import InputError
from bev_ddp.nn.map_decoder import MapDecoder


@dataclass
class DDPOutput:
    """Result of :meth:`DDPHead.predict`.

    Attributes:
        logits: [B, K, H, W] final step's prediction (sigmoid for multi-label, softmax for
            single-label, ``label_encoder.decode`` for continuous targets).
        step_logits: ``steps`` tensors [B, K, H, W], one per sampling step (dynamic inference).
        uncertainty: [B, H, W] in [0, 1], normalised count of step-to-step changes of the
            discretised prediction (0 everywhere for one step).
    """

    logits: torch.Tensor
    step_logits: list[torch.Tensor]
    uncertainty: torch.Tensor


def _randn(shape: Sequence[int], *, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device/dtype, drawn from ``generator``."""
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, device=device).to(device=like.device, dtype=like.dtype)


class DDPHead(nn.Module):
    """Diffusion map head shared by BEV map segmentation, image segmentation and depth.

    Args:
        decoder: the map decoder; its ``map_channels`` / ``out_channels`` must equal the label
            encoder's ``channels`` / ``out_channels``.
        label_encoder: one of :mod:`bev_ddp.diffusion.encoding`.
        objective: ``(logits [B, K, H, W] at target size, target) -> scalar loss``.
        sampler: the DDIM sampler (a plain settings object, like a diffusers scheduler); its noise
            schedule also noises the training targets.  Default: cosine schedule, ``td = 1``.
        time_input: what the decoder's time embedding reads, ``"log_snr"`` (``schedule.log_snr(t)``)
            or ``"t"`` (the time in [0, 1]); see the module docstring.
        steps: sampling steps of :meth:`predict` / :meth:`predict_many` when none are given.
        reencode: how a step's prediction becomes the next step's clean-map estimate (and the
            self-aligned phase's noised map): ``"threshold"`` (Alg. 3, the authors': discretise, then
            encode) or ``"soft"`` (the probability-weighted encoding: a class held below 0.5 keeps
            its share of the code instead of vanishing; docs/thin_classes.md).  Continuous targets
            (depth) are never discretised, so both give the same map there.
    """

    TIME_INPUTS = ("log_snr", "t")
    DEFAULT_STEPS = 3  # the paper's inference setting

    def __init__(self, *, decoder: MapDecoder, label_encoder: MapEncoder,
                 objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 sampler: DDIMSampler | None = None, time_input: str = "log_snr", steps: int = DEFAULT_STEPS,
                 reencode: str = "threshold") -> None:
        super().__init__()
        if time_input not in self.TIME_INPUTS:
            raise InputError(f"time_input must be one of {', '.join(self.TIME_INPUTS)}, got {time_input!r}")
        if reencode not in REENCODINGS:
            raise InputError(f"reencode must be one of {', '.join(REENCODINGS)}, got {reencode!r}")
        if reencode == "soft" and isinstance(label_encoder, AnalogBitsEncoder):
            raise InputError("reencode soft needs a class embedding or one-hot encoding (analog bits have no "
                             "probability-weighted code)")
        self.reencode = reencode
        if decoder.map_channels != label_encoder.channels:
            raise InputError(
                f"decoder map_channels {decoder.map_channels} != label encoder channels {label_encoder.channels}"
            )
        if decoder.out_channels != label_encoder.out_channels:
            raise InputError(
                f"decoder out_channels {decoder.out_channels} != "
                f"label encoder out_channels {label_encoder.out_channels}"
            )
        if not callable(objective):
            raise InputError(f"objective must be callable, got {type(objective).__name__}")
        self.decoder = decoder
        self.label_encoder = label_encoder
        self.objective = objective
        if sampler is not None and not isinstance(sampler, DDIMSampler):
            raise InputError(f"sampler must be a DDIMSampler, got {type(sampler).__name__}")
        self.sampler = sampler if sampler is not None else DDIMSampler()
        self.schedule: NoiseSchedule = self.sampler.schedule  # training noises with the sampler's schedule
        self.time_input = time_input
        if isinstance(steps, Sequence):
            raise InputError(f"steps must be one integer >= 1, got {steps!r}")
        (self.steps,) = check_step_counts(steps)

    def extra_repr(self) -> str:
        return (f"schedule={self.schedule.name!r}, td={self.sampler.td}, time_input={self.time_input!r}, "
                f"steps={self.steps}, reencode={self.reencode!r}")

    def decoder_time(self, t: torch.Tensor) -> torch.Tensor:
        """Times ``t`` [B] in [0, 1] -> the decoder's time input [B]: ``log_snr(t)`` or ``t`` itself."""
        return self.schedule.log_snr(t) if self.time_input == "log_snr" else t

    def _check_cond(self, cond: torch.Tensor) -> None:
        if not isinstance(cond, torch.Tensor):
            raise InputError(f"cond must be a torch.Tensor, got {type(cond).__name__}")
        if cond.dim() != 4 or cond.shape[1] != self.decoder.cond_channels:
            raise InputError(f"cond must have shape [B, {self.decoder.cond_channels}, H, W], got {tuple(cond.shape)}")
        if not cond.is_floating_point():
            raise InputError(f"cond must be floating point, got {cond.dtype}")
        if cond.shape[0] == 0:
            raise InputError("cond is an empty batch")
        check_finite("cond", cond)  # the one value check (device read-back) of a call, at its entry

    def _denoise(self, cond: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x_t, t: self.decoder(cond, x_t, self.decoder_time(t))

    def _encode_prediction(self, size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
        """Decoder logits -> encoded prediction at the noisy map's ``size``: ``threshold``: the
        discretised map (resized nearest when the decoder outputs another grid); ``soft``: the
        probabilities (area mean / bilinear resize), encoded probability-weighted."""
        enc = self.label_encoder

        def encode(logits: torch.Tensor) -> torch.Tensor:
            if self.reencode == "soft" and isinstance(enc, LabelEncoder):
                return enc.encode_probabilities(resize_probabilities(enc.probabilities(logits), size))
            if tuple(logits.shape[-2:]) == tuple(size):
                return enc.encode_prediction(logits)
            labels = enc.discretize(logits)
            labels = labels if labels.dim() == 4 else labels[:, None]  # [B, K or 1, H, W]
            labels = F.interpolate(labels.float(), size=tuple(size), mode="nearest").to(labels.dtype)
            return enc.encode_labels(labels if enc.multi_label else labels[:, 0])

        return encode

    # -- training ----------------------------------------------------------------------------
    def loss(self, cond: torch.Tensor, target: torch.Tensor, *, self_aligned: bool = False,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training loss (Alg. 1, or Alg. 4 with ``self_aligned``).

        Args:
            cond: [B, cond_channels, h, w] condition features.
            target: ground truth at any resolution >= the condition's (see the encoders).
            self_aligned: noise the model's own prediction instead of the ground truth.
            generator: source of ``t`` and the noise (global RNG if None).
        Returns:
            ``{"loss_ddp": scalar}``.
        """
        self._check_cond(cond)
        if not isinstance(target, torch.Tensor) or target.dim() < 3 or target.shape[0] != cond.shape[0]:
            got = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
            raise InputError(f"target must be a tensor with batch size {cond.shape[0]} like cond, got {got}")
        b, size = cond.shape[0], tuple(cond.shape[-2:])
        if self_aligned:
            self.label_encoder.prepare_target(target, size)  # validates the ground truth the loss will use
            # Alg. 4: one step from pure noise at t = 1, no gradient through this pass
            with torch.no_grad():
                shape = (b, self.decoder.map_channels, *size)
                first = self.decoder(cond, _randn(shape, like=cond, generator=generator),
                                     self.decoder_time(torch.ones(b, device=cond.device)))
            x0 = self._encode_prediction(size)(first)  # [B, D, h, w]; the encoder still learns
        else:
            x0 = self.label_encoder.encode(target, size)  # [B, D, h, w]
        # Alg. 1: corrupt and predict
        t = self.schedule.sample_times(b, device=cond.device, generator=generator)
        x_t = self.schedule.q_sample(x0, t, _randn(x0.shape, like=x0, generator=generator))
        logits = self.decoder(cond, x_t, self.decoder_time(t))  # [B, K, h, w]
        if tuple(logits.shape[-2:]) != tuple(target.shape[-2:]):
            logits = F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
        loss = self.objective(logits, target)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise InputError(f"objective must return a scalar tensor, got {getattr(loss, 'shape', type(loss))}")
        return {"loss_ddp": loss}

    # -- inference ---------------------------------------------------------------------------
    def initial_noise(self, cond: torch.Tensor, *, seed: int | Sequence[int] | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Start map ``x_1`` [B, map_channels, h, w] (see the module docstring for ``seed``).

        ``seed`` is an int (same noise for every sample) or one int per sample; ``generator``
        draws independent noise for each sample; with neither the global RNG is used.
        """
        b, size = cond.shape[0], tuple(cond.shape[-2:])
        one = (1, self.decoder.map_channels, *size)
        if seed is not None and generator is not None:
            raise InputError("pass either seed or generator to predict, not both")
        if seed is None:
            return _randn((b, *one[1:]), like=cond, generator=generator)
        seeds = [seed] * b if isinstance(seed, numbers.Integral) else list(seed)
        if len(seeds) != b or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
            raise InputError(f"seed must be an int or {b} ints (one per sample), got {seed!r}")
        return torch.cat([_randn(one, like=cond, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    def step_counts(self, steps: int | Sequence[int] | None = None) -> list[int]:
        """The step counts of a prediction: ``steps`` validated (the one check of a call), or
        ``[self.steps]`` (the head's default, ``model.head.ddp.steps`` / ``model.ddp.steps``) for ``None``."""
        return [self.steps] if steps is None else check_step_counts(steps)

    @torch.no_grad()
    def predict(self, cond: torch.Tensor, *, steps: int | None = None, seed: int | Sequence[int] | None = None,
                generator: torch.Generator | None = None, output_size: tuple[int, int] | None = None) -> DDPOutput:
        """Sample a map (Alg. 2): :meth:`predict_many` with one step count.

        Args:
            cond: [B, cond_channels, h, w] condition features.
            steps: number of decoder calls (>= 1); ``None``: the head's ``steps``.
            seed / generator: noise source (see :meth:`initial_noise`).
            output_size: optional (H, W); logits are resized bilinearly to it before the
                discretisation that drives the uncertainty map.
        Returns:
            :class:`DDPOutput`.
        """
        if isinstance(steps, Sequence):
            raise InputError(f"steps must be one integer >= 1 (predict_many takes several), got {steps!r}")
        runs = self.predict_many(cond, steps=None if steps is None else [steps], seed=seed, generator=generator,
                                 output_size=output_size)
        return next(iter(runs.values()))

    @torch.no_grad()
    def predict_many(self, cond: torch.Tensor, *, steps: Sequence[int] | None = None,
                     seed: int | Sequence[int] | None = None, generator: torch.Generator | None = None,
                     output_size: tuple[int, int] | None = None) -> dict[int, DDPOutput]:
        """:meth:`predict` for several step counts from one start map, e.g. ``steps=[1, 3, 5]``.

        The first decoder call (t = 1, the same start map) is shared by every count, so the
        1-step map equals the first step of any run with the same seed.  ``steps=None``: the
        head's ``steps``.

        Returns:
            ``{step count: DDPOutput}`` in the order of ``steps``.
        """
        counts = self.step_counts(steps)
        self._check_cond(cond)
        noise = self.initial_noise(cond, seed=seed, generator=generator)
        runs = self.sampler.sample_many(noise, steps=counts, denoise=self._denoise(cond),
                                        encode_prediction=self._encode_prediction(tuple(cond.shape[-2:])))
        return {n: self._output(run.step_predictions, cond, output_size) for n, run in runs.items()}

    def sample_logits(self, cond: torch.Tensor, noise: torch.Tensor, *, steps: int,
                      output_size: tuple[int, int] | None = None) -> list[torch.Tensor]:
        """Alg. 2 from a given start map, as one traceable graph: every step's logits.

        No value checks and no read-backs (what ``torch.export`` and the ONNX export trace);
        :meth:`predict` is the checked entry point and gives the same logits for the same noise.

        Args:
            cond: [B, cond_channels, h, w] condition features.
            noise: [B, map_channels, h, w] start map ``x_1`` (:meth:`initial_noise`).
            steps: decoder calls S.
            output_size: optional (H, W) the logits are resized to (bilinear).
        Returns:
            S tensors [B, K, H, W].
        """
        run = self.sampler.sample(noise, steps=steps, denoise=self._denoise(cond),
                                  encode_prediction=self._encode_prediction(tuple(cond.shape[-2:])))
        if output_size is None or tuple(output_size) == tuple(cond.shape[-2:]):
            return run.step_predictions
        return [F.interpolate(x, size=tuple(output_size), mode="bilinear", align_corners=False)
                for x in run.step_predictions]

    def _output(self, step_logits: list[torch.Tensor], cond: torch.Tensor,
                output_size: tuple[int, int] | None) -> DDPOutput:
        if output_size is not None and tuple(output_size) != tuple(cond.shape[-2:]):
            step_logits = [F.interpolate(x, size=tuple(output_size), mode="bilinear", align_corners=False)
                           for x in step_logits]
        uncertainty = change_count_uncertainty([self.label_encoder.discretize(x) for x in step_logits])
        return DDPOutput(logits=step_logits[-1], step_logits=step_logits, uncertainty=uncertainty)
