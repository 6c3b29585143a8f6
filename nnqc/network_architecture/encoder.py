"""The 3D ResNet encoder of QCResUNet and of the ResNet regressors (paper §2.3.1, Fig. 2a-b)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnqc.network_architecture.blocks import ECA, ResidualBlock, as_triple, same_padding

NUM_DOWNSAMPLINGS = 5  # stem, max-pool, stages 2-4 (stage 1 keeps the resolution)


def check_strides(strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]], num_stages: int) -> None:
    if len(strides) != NUM_DOWNSAMPLINGS:
        raise ValueError(f"strides must list {NUM_DOWNSAMPLINGS} per-axis strides (stem, max-pool, stages 2-4), "
                         f"got {len(strides)}")
    if len(kernel_sizes) < num_stages:
        raise ValueError(f"kernel_sizes must list one kernel size per stage ({num_stages}), got {len(kernel_sizes)}")


class ResNetEncoder(nn.Module):
    """ECA on the inputs -> 7x7x7 stem -> max-pool -> residual stages (strides 1, then plan-given).

    `forward` returns the stem output, the max-pool output and every stage's output, finest first, so that
    a decoder can take its skips from them.
    """

    def __init__(self, input_channels: int, strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                 stem_kernel_size: Sequence[int], features_per_stage: Sequence[int],
                 blocks_per_stage: Sequence[int], dropout_p: float, norm_op: type[nn.Module],
                 norm_op_kwargs: dict, nonlin: type[nn.Module], nonlin_kwargs: dict, num_stages: int | None = None):
        super().__init__()
        num_stages = len(features_per_stage) if num_stages is None else num_stages
        check_strides(strides, kernel_sizes, num_stages)
        self.strides = [as_triple(s) for s in strides]
        self.input_attention = ECA(3)
        stem_width = features_per_stage[0]
        self.stem = nn.Sequential(
            nn.Conv3d(input_channels, stem_width, as_triple(stem_kernel_size), self.strides[0],
                      same_padding(stem_kernel_size), bias=False),
            norm_op(stem_width, **norm_op_kwargs),
            nonlin(**nonlin_kwargs),
        )
        pool_kernel = tuple(3 if s > 1 else 1 for s in self.strides[1])
        self.pool = nn.MaxPool3d(pool_kernel, self.strides[1], same_padding(pool_kernel))
        stage_strides = [(1, 1, 1)] + self.strides[2:]
        self.stages = nn.ModuleList()
        in_channels = stem_width
        for s in range(num_stages):
            blocks = []
            for b in range(blocks_per_stage[s]):
                blocks.append(ResidualBlock(in_channels, features_per_stage[s], stage_strides[s] if b == 0 else 1,
                                            kernel_sizes[s], norm_op, norm_op_kwargs, nonlin, nonlin_kwargs,
                                            dropout_p))
                in_channels = features_per_stage[s]
            self.stages.append(nn.Sequential(*blocks))
        self.output_channels = in_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.stem(self.input_attention(x))
        out = self.pool(stem)
        features = [stem, out]
        for stage in self.stages:
            out = stage(out)
            features.append(out)
        return features
