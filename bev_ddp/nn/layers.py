"""Small conv blocks shared by the camera branch, the BEV decoder and heads, and the image encoder.

Both keep the spatial size ('same' padding for odd kernels, divided by ``stride``).
Input [B, in_channels, H, W] → [B, out_channels, H / stride, W / stride].
"""
from __future__ import annotations

from torch import nn

from bev_ddp.errors import InputError


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Conv2d (no bias) → BatchNorm2d → ReLU, 'same' padding (BEVFusion's camera neck, fuser and heads)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def conv_gn(in_channels: int, out_channels: int, kernel_size: int, num_groups: int) -> nn.Sequential:
    """Conv (no bias) followed by GroupNorm; padding keeps the spatial size (image FPN, merge, FCN head)."""
    if out_channels % num_groups:
        raise InputError(f"out_channels {out_channels} is not divisible by num_groups {num_groups}")
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.GroupNorm(num_groups, out_channels),
    )
