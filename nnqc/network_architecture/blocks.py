"""Building blocks shared by QCResUNet and its baselines (paper Fig. 2 b-d).

Norm and non-linearity are passed as classes so that plans can configure them; every block is 3D.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

IntOrSeq = int | Sequence[int]


def as_triple(value: IntOrSeq) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value,) * 3
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"expected 3 values (one per axis), got {value}")
    return value


def same_padding(kernel_size: IntOrSeq) -> tuple[int, int, int]:
    return tuple(k // 2 for k in as_triple(kernel_size))


def autocast_off(device_type: str):
    """Full precision inside an autocast region, for the few small parts that keep the outputs equal to fp32
    (measured at the brain configuration: the regression head and the attention means; documentation/benchmarks.md,
    "bf16 on the CPU")."""
    return torch.autocast(device_type, enabled=False) if device_type in ("cpu", "cuda") else nullcontext()


def spatial_means(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, C) spatial means, accumulated and returned in fp32 whatever the dtype of x."""
    return torch.mean(x, dim=(2, 3, 4), dtype=torch.float32)


class ECA(nn.Module):
    """Efficient channel attention (Wang et al. 2020): GAP -> 1D conv across channels -> sigmoid -> rescale.

    It learns how much each channel (image modality, region mask) matters, with only `k` parameters.
    """

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def channel_weights(self, channel_means: torch.Tensor) -> torch.Tensor:
        """(B, C) channel means -> (B, C) attention weights in (0, 1), in fp32 also under autocast: tiny, and
        it cuts the bf16 error of the regression outputs by a third (measured)."""
        with autocast_off(channel_means.device.type):
            return torch.sigmoid(self.conv(channel_means.float().unsqueeze(1))).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.channel_weights(spatial_means(x))
        return x * weights[:, :, None, None, None].to(x.dtype)


class ResidualBlock(nn.Module):
    """3D BasicBlock: conv3 -> IN -> ReLU -> conv3 -> IN -> spatial dropout -> + shortcut -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: IntOrSeq, kernel_size: IntOrSeq,
                 norm_op: type[nn.Module], norm_op_kwargs: dict, nonlin: type[nn.Module], nonlin_kwargs: dict,
                 dropout_p: float):
        super().__init__()
        stride, kernel_size = as_triple(stride), as_triple(kernel_size)
        pad = same_padding(kernel_size)
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size, stride, pad, bias=False)
        self.norm1 = norm_op(out_channels, **norm_op_kwargs)
        self.nonlin1 = nonlin(**nonlin_kwargs)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size, 1, pad, bias=False)
        self.norm2 = norm_op(out_channels, **norm_op_kwargs)
        self.dropout = nn.Dropout3d(dropout_p) if dropout_p > 0 else nn.Identity()
        self.nonlin2 = nonlin(**nonlin_kwargs)
        if in_channels != out_channels or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, stride, bias=False),
                                          norm_op(out_channels, **norm_op_kwargs))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.nonlin1(self.norm1(self.conv1(x)))
        out = self.dropout(self.norm2(self.conv2(out)))
        return self.nonlin2(out + self.shortcut(x))


class ConvNormNonlin(nn.Sequential):
    """Decoder convolution block (paper Fig. 2c): conv -> IN -> LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrSeq, norm_op: type[nn.Module],
                 norm_op_kwargs: dict, nonlin: type[nn.Module], nonlin_kwargs: dict, stride: IntOrSeq = 1):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, as_triple(kernel_size), as_triple(stride),
                      same_padding(kernel_size), bias=False),
            norm_op(out_channels, **norm_op_kwargs),
            nonlin(**nonlin_kwargs),
        )


def upsample_nearest(x: torch.Tensor, factor: IntOrSeq) -> torch.Tensor:
    """Integer-factor nearest-neighbour upsampling (cheap, and exactly composable: x2 then x2 equals x4)."""
    factor = as_triple(factor)
    if factor == (1, 1, 1):
        return x
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def resize_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="nearest")
