"""The regression baselines and ablations the paper compares QCResUNet with (paper §3.3, §4.3, Table F.3).

All take the same inputs and keyword arguments as QCResUNet and return `(regression, sem_logits)`, with
`sem_logits` None for the regressors, so that trainers treat every network alike; the regressors predict the same
2 + 2C values (subject level, then per region) as QCResUNet.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import nn

from nnqc.network_architecture.blocks import ConvNormNonlin, as_triple
from nnqc.network_architecture.encoder import ResNetEncoder, check_strides
from nnqc.network_architecture.qcresunet import (
    DEFAULT_KERNEL_SIZES,
    DEFAULT_STRIDES,
    QCResUNet,
    RegressionHead,
    resolve_regression_outputs,
)


class ResNetRegressor(nn.Module):
    """ResNet regressor with QCResUNet's residual blocks: encoder -> GAP -> FC.

    blocks_per_stage (2, 2, 2, 2) is the paper's "ResNet-34" (8.36 M), (3, 4, 6, 3) its "ResNet-50" (15.94 M).
    """

    def __init__(self, input_channels: int, num_regions: int, num_regression_outputs: int | None = None,
                 strides: Sequence[Sequence[int]] = DEFAULT_STRIDES,
                 kernel_sizes: Sequence[Sequence[int]] = DEFAULT_KERNEL_SIZES,
                 stem_kernel_size: Sequence[int] = (7, 7, 7),
                 features_per_stage: Sequence[int] = (32, 64, 128, 256),
                 blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
                 dropout_p: float = 0.3,
                 norm_op: type[nn.Module] = nn.InstanceNorm3d, norm_op_kwargs: dict | None = None,
                 nonlin: type[nn.Module] = nn.ReLU, nonlin_kwargs: dict | None = None, **unused_unet_kwargs):
        super().__init__()
        self.num_regions = num_regions
        self.encoder = ResNetEncoder(input_channels, strides, kernel_sizes, stem_kernel_size, features_per_stage,
                                     blocks_per_stage, dropout_p, norm_op,
                                     {"eps": 1e-5, "affine": True} if norm_op_kwargs is None else norm_op_kwargs,
                                     nonlin, {"inplace": True} if nonlin_kwargs is None else nonlin_kwargs)
        self.num_regression_outputs = resolve_regression_outputs(num_regression_outputs, num_regions)
        self.regression = RegressionHead(features_per_stage[-1], self.num_regression_outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.regression(self.encoder(x)[-1]), None


class ResNet34Regressor(ResNetRegressor):
    """The paper's "ResNet-34" baseline: BasicBlock x[2, 2, 2, 2] whatever the plans say."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "blocks_per_stage": (2, 2, 2, 2)})


class ResNet50Regressor(ResNetRegressor):
    """The paper's "ResNet-50" baseline (Robinson et al. 2018): BasicBlock x[3, 4, 6, 3]."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "blocks_per_stage": (3, 4, 6, 3)})


def unet_kernel_sizes(strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """3 along an axis once the UNet has pooled it (or pools it at this level), 1 before: nnU-Net's rule
    of not convolving across coarse slices at full resolution."""
    strides = [as_triple(s) for s in strides]
    kernels = []
    for level in range(len(strides) + 1):
        seen = strides[:min(level + 1, len(strides))]
        kernels.append(tuple(3 if any(s[a] > 1 for s in seen) else 1 for a in range(3)))
    return kernels


class UNetRegressor(nn.Module):
    """The paper's UNet baseline: a 6-level plain-convolution UNet (5 down- and up-sampling steps, two
    conv-IN-LeakyReLU blocks per level, strided-conv downsampling, transposed-conv upsampling), then global
    average pooling of its full-resolution output features and an FC layer (16.60 M parameters)."""

    def __init__(self, input_channels: int, num_regions: int, num_regression_outputs: int | None = None,
                 strides: Sequence[Sequence[int]] = DEFAULT_STRIDES,
                 unet_features: Sequence[int] = (16, 32, 64, 128, 256, 320),
                 norm_op: type[nn.Module] = nn.InstanceNorm3d, norm_op_kwargs: dict | None = None,
                 decoder_nonlin: type[nn.Module] = nn.LeakyReLU, decoder_nonlin_kwargs: dict | None = None,
                 **unused_resnet_kwargs):
        super().__init__()
        check_strides(strides, DEFAULT_KERNEL_SIZES, 4)
        if len(unet_features) != len(strides) + 1:
            raise ValueError(f"unet_features needs {len(strides) + 1} widths, one per level")
        self.num_regions = num_regions
        norm_op_kwargs = {"eps": 1e-5, "affine": True} if norm_op_kwargs is None else norm_op_kwargs
        nonlin_kwargs = ({"negative_slope": 0.01, "inplace": True} if decoder_nonlin_kwargs is None
                         else decoder_nonlin_kwargs)
        block = partial(ConvNormNonlin, norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=decoder_nonlin,
                        nonlin_kwargs=nonlin_kwargs)
        kernels = unet_kernel_sizes(strides)
        strides = [(1, 1, 1)] + [as_triple(s) for s in strides]
        self.encoder = nn.ModuleList()
        in_ch = input_channels
        for level, width in enumerate(unet_features):
            self.encoder.append(nn.Sequential(block(in_ch, width, kernels[level], stride=strides[level]),
                                              block(width, width, kernels[level])))
            in_ch = width
        self.upsamplers, self.decoder = nn.ModuleList(), nn.ModuleList()
        for level in range(len(unet_features) - 2, -1, -1):
            width = unet_features[level]
            up = strides[level + 1]
            self.upsamplers.append(nn.ConvTranspose3d(unet_features[level + 1], width, up, up))
            self.decoder.append(nn.Sequential(block(2 * width, width, kernels[level]),
                                              block(width, width, kernels[level])))
        self.num_regression_outputs = resolve_regression_outputs(num_regression_outputs, num_regions)
        self.regression = RegressionHead(unet_features[0], self.num_regression_outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        for up, stage, skip in zip(self.upsamplers, self.decoder, reversed(skips[:-1])):
            x = stage(torch.cat((up(x), skip), dim=1))
        return self.regression(x), None


class QCResUNetNoAttention(QCResUNet):
    """Ablation: SEMs from a 1x1x1 conv on the last decoder features, no attention-based aggregation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "attention_aggregation": False})


class QCResUNetNoRegression(QCResUNet):
    """Ablation: the SEM task alone (no regression head, hence no encoder stage 4)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "regression_head": False})
