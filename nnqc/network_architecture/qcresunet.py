"""QCResUNet (paper §2.3, Fig. 2, Table F.3): ResNet-34 encoder for DSC/NSD regression, a decoder fed from
stage 3 for the segmentation error maps (SEMs), and attention-based SEM aggregation.

Input: the M z-scored image channels followed by the C one-hot region masks of the query segmentation.
Output: `(regression, sem_logits)`: (B, num_regression_outputs) predicted subject-level (DSC, NSD) followed by
each region's DSC and NSD (2 + 2C; 2 for models trained before, see regression_outputs) and (B, C, *input shape)
SEM logits. Either is None in the ablation that drops it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnqc.network_architecture.blocks import (
    ECA,
    ConvNormNonlin,
    as_triple,
    autocast_off,
    resize_nearest,
    spatial_means,
    upsample_nearest,
)
from nnqc.network_architecture.encoder import ResNetEncoder
from nnqc.network_architecture.regression_outputs import check_regression_outputs, regression_output_count

DEFAULT_STRIDES = ((2, 2, 2),) * 5
DEFAULT_KERNEL_SIZES = ((3, 3, 3),) * 4


class RegressionHead(nn.Module):
    """Global average pooling of the deepest features -> fully connected layer -> (DSC, NSD[, per region]).

    Always fp32, also under autocast: a bf16 output is rounded to steps of 0.004 near 1, as large as the rest of
    the bf16 error together (measured); the head costs nothing next to the convolutions.
    """

    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_off(x.device.type):
            return self.fc(spatial_means(x))


def resolve_regression_outputs(num_regression_outputs: int | None, num_regions: int) -> int:
    """2 + 2C when not given; a given count must be one of the two layouts (regression_outputs)."""
    n = regression_output_count(num_regions) if num_regression_outputs is None else int(num_regression_outputs)
    check_regression_outputs(n, num_regions)
    return n


class DecoderStage(nn.Module):
    """1x1x1 conv halving the channels -> nearest x`factor` upsampling -> concat skip -> two conv blocks.

    The 1x1x1 conv runs before the upsampling: both are linear and commute, so this equals the paper's
    order at a fraction of the cost.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, factor: Sequence[int],
                 kernel_size: Sequence[int], norm_op, norm_op_kwargs, nonlin, nonlin_kwargs):
        super().__init__()
        self.factor = as_triple(factor)
        self.reduce = nn.Conv3d(in_channels, in_channels // 2, 1)
        self.convs = nn.Sequential(
            ConvNormNonlin(in_channels // 2 + skip_channels, out_channels, kernel_size, norm_op, norm_op_kwargs,
                           nonlin, nonlin_kwargs),
            ConvNormNonlin(out_channels, out_channels, kernel_size, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = upsample_nearest(self.reduce(x), self.factor)
        return self.convs(torch.cat((x, skip), dim=1))


class AttentionSEMAggregation(nn.Module):
    """Attention-based SEM aggregation (paper §2.3.1, Fig. 2a,d).

    At every decoder scale and at the input scale, decoder features projected to C channels are concatenated
    with the query's one-hot masks resized to that scale; an ECA weighs these 2C channels; the branches are
    upsampled to the input size and summed, and a 1x1x1 conv maps 2C -> C SEM logits.

    Computed in an equivalent, cheaper order. ECA only rescales channels and the final conv is linear, so
    each branch reduces to two per-sample C x C mixes, one of the projected features and one of the query;
    nearest upsampling by integer factors is linear, composable and keeps channel means, so the feature
    parts are mixed at their own scale and summed coarse to fine, and the input-scale branch reuses the
    finest decoder projection. No 2C-channel tensor is ever built at full size.
    """

    def __init__(self, decoder_channels: Sequence[int], num_regions: int, factors: Sequence[Sequence[int]],
                 final_factor: Sequence[int]):
        super().__init__()
        c = num_regions
        self.projections = nn.ModuleList([nn.Conv3d(ch, c, 1) for ch in decoder_channels])
        # one ECA per decoder scale, plus one for the input scale
        self.attentions = nn.ModuleList([ECA(3) for _ in range(len(decoder_channels) + 1)])
        self.aggregate = nn.Conv3d(2 * c, c, 1)
        self.factors = [as_triple(f) for f in factors]  # between consecutive decoder scales
        self.final_factor = as_triple(final_factor)

    def _mixes(self, attention: ECA, projected: torch.Tensor, query: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (C x C) matrices applying ECA then the aggregation conv to the two halves."""
        means = torch.cat((spatial_means(projected), spatial_means(query)), dim=1)
        weights = attention.channel_weights(means)  # (B, 2C)
        c = self.aggregate.out_channels
        mix = self.aggregate.weight.view(c, 2 * c)[None].float() * weights[:, None, :]
        return mix[..., :c], mix[..., c:]

    @staticmethod
    def _mix_channels(mix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(mix.to(x.dtype), x.flatten(2)).view(x.shape[0], mix.shape[1], *x.shape[2:])

    def forward(self, decoder_features: Sequence[torch.Tensor], query: torch.Tensor) -> torch.Tensor:
        query = query.to(decoder_features[-1].dtype)
        total = None
        for i, (attention, projection, features) in enumerate(zip(self.attentions, self.projections,
                                                                   decoder_features)):
            projected = projection(features)
            query_here = resize_nearest(query, projected.shape[2:])
            mix_p, mix_q = self._mixes(attention, projected, query_here)
            branch = self._mix_channels(mix_p, projected) + self._mix_channels(mix_q, query_here)
            total = branch if total is None else upsample_nearest(total, self.factors[i - 1]) + branch
        mix_p, mix_q = self._mixes(self.attentions[-1], projected, query)
        total = upsample_nearest(total + self._mix_channels(mix_p, projected), self.final_factor)
        total = total + self._mix_channels(mix_q, query)
        return total + self.aggregate.bias.view(1, -1, 1, 1, 1).to(total.dtype)


class QCResUNet(nn.Module):
    """QCResUNet built from plan-style keyword arguments (SPEC §3).

    strides: 5 per-axis strides: stem, max-pool, stages 2, 3, 4. kernel_sizes: 4 per-axis kernel sizes of
    stages 1-4 (the decoder reuses those of the skip it joins). decoder_features: the decoder's input width
    (stage 3) followed by the widths of its three up-steps. num_regression_outputs: 2 + 2C (None, the default)
    or 2, the paper's head, which models trained before per-region outputs have.
    """

    def __init__(self, input_channels: int, num_regions: int, num_regression_outputs: int | None = None,
                 strides: Sequence[Sequence[int]] = DEFAULT_STRIDES,
                 kernel_sizes: Sequence[Sequence[int]] = DEFAULT_KERNEL_SIZES,
                 stem_kernel_size: Sequence[int] = (7, 7, 7),
                 features_per_stage: Sequence[int] = (32, 64, 128, 256),
                 blocks_per_stage: Sequence[int] = (3, 4, 6, 3),
                 decoder_features: Sequence[int] = (128, 64, 64, 32),
                 dropout_p: float = 0.3,
                 norm_op: type[nn.Module] = nn.InstanceNorm3d, norm_op_kwargs: dict | None = None,
                 nonlin: type[nn.Module] = nn.ReLU, nonlin_kwargs: dict | None = None,
                 decoder_nonlin: type[nn.Module] = nn.LeakyReLU, decoder_nonlin_kwargs: dict | None = None,
                 attention_aggregation: bool = True, regression_head: bool = True):
        super().__init__()
        if input_channels <= num_regions:
            raise ValueError(f"input_channels ({input_channels}) must be the image channels plus the "
                             f"{num_regions} region masks")
        if len(features_per_stage) != 4 or len(blocks_per_stage) != 4 or len(decoder_features) != 4:
            raise ValueError("features_per_stage, blocks_per_stage and decoder_features need 4 entries each")
        if decoder_features[0] != features_per_stage[2]:
            raise ValueError("decoder_features[0] is the width of stage 3, which feeds the decoder")
        norm_op_kwargs = {"eps": 1e-5, "affine": True} if norm_op_kwargs is None else norm_op_kwargs
        nonlin_kwargs = {"inplace": True} if nonlin_kwargs is None else nonlin_kwargs
        decoder_nonlin_kwargs = ({"negative_slope": 0.01, "inplace": True} if decoder_nonlin_kwargs is None
                                 else decoder_nonlin_kwargs)
        self.num_regions = num_regions
        self.num_regression_outputs = resolve_regression_outputs(num_regression_outputs, num_regions)
        self.strides = [as_triple(s) for s in strides]
        # without the regression task stage 4 has no purpose: it feeds only the regression head
        self.encoder = ResNetEncoder(input_channels, strides, kernel_sizes, stem_kernel_size, features_per_stage,
                                     blocks_per_stage, dropout_p, norm_op, norm_op_kwargs, nonlin, nonlin_kwargs,
                                     num_stages=4 if regression_head else 3)
        self.regression = (RegressionHead(features_per_stage[3], self.num_regression_outputs) if regression_head
                           else None)
        # skips, coarse to fine: stage-2 output, max-pool output, stem output
        skip_channels = (features_per_stage[1], features_per_stage[0], features_per_stage[0])
        up_factors = (self.strides[3], self.strides[2], self.strides[1])
        skip_kernels = (kernel_sizes[1], kernel_sizes[0], kernel_sizes[0])
        self.decoder = nn.ModuleList()
        in_ch = decoder_features[0]
        for out_ch, skip_ch, factor, kernel in zip(decoder_features[1:], skip_channels, up_factors, skip_kernels):
            self.decoder.append(DecoderStage(in_ch, skip_ch, out_ch, factor, kernel, norm_op, norm_op_kwargs,
                                             decoder_nonlin, decoder_nonlin_kwargs))
            in_ch = out_ch
        if attention_aggregation:
            self.sem_head = AttentionSEMAggregation(decoder_features[1:], num_regions, up_factors[1:], self.strides[0])
        else:
            self.sem_head = nn.Conv3d(decoder_features[-1], num_regions, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        stem, pooled, _, stage2, stage3, *deepest = self.encoder(x)
        regression = self.regression(deepest[0]) if self.regression is not None else None
        decoded, out = [], stage3
        for stage, skip in zip(self.decoder, (stage2, pooled, stem)):
            out = stage(out, skip)
            decoded.append(out)
        if isinstance(self.sem_head, AttentionSEMAggregation):
            sem = self.sem_head(decoded, x[:, -self.num_regions:])
        else:
            sem = upsample_nearest(self.sem_head(decoded[-1]), self.strides[0])
        return regression, sem
