"""Task-agnostic DDP diffusion core: noise schedules, DDIM sampler, label encoders, uncertainty.

Nothing here knows about BEV, images or depth; :class:`bev_ddp.nn.DDPHead` combines these parts
with a :class:`bev_ddp.nn.MapDecoder`.
"""
from __future__ import annotations

from bev_ddp.diffusion.sampler import DDIMSampleOutput, DDIMSampler, DDIMStepOutput
from bev_ddp.diffusion.schedule import NoiseSchedule, alpha_sigma, cosine_log_snr, linear_log_snr
from bev_ddp.diffusion.uncertainty import change_count_uncertainty

__all__ = [
    "DDIMSampleOutput",
    "DDIMSampler",
    "DDIMStepOutput",
    "NoiseSchedule",
    "alpha_sigma",
    "change_count_uncertainty",
    "cosine_log_snr",
    "linear_log_snr",
]
