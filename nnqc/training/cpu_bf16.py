"""Instance norms in fp32 under CPU bf16 autocast, where they decide how closely bf16 training follows fp32.

CPU autocast runs convolutions and linear layers in bf16 and lets an instance norm run in whatever dtype its input
has, i.e. in bf16 after a bf16 convolution. Measured with benchmarks/compare_training_precision.py (QCResUNet,
7×64³, one step from one initialisation): the regression outputs after the step differed from fp32 by up to
0.130 with the norms in bf16 and 0.027 with them in fp32 (inputs rounded to bf16 alone: 0.011); keeping the
regression and SEM heads in fp32 as well changed nothing. So the norms get fp32 inputs (and then compute in fp32,
with their fp32 affine parameters); everything else stays under autocast.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.instancenorm import _InstanceNorm


def _fp32_input(module: nn.Module, args: tuple) -> tuple | None:
    if torch.is_autocast_enabled("cpu") and args and torch.is_tensor(args[0]) and args[0].dtype == torch.bfloat16:
        return (args[0].float(), *args[1:])
    return None


def instance_norms_in_fp32(network: nn.Module) -> int:
    """Hook every instance norm of `network` to run on fp32 inputs under CPU bf16 autocast (nothing changes
    otherwise); returns how many were hooked."""
    norms = [m for m in network.modules() if isinstance(m, _InstanceNorm)]
    for norm in norms:
        norm.register_forward_pre_hook(_fp32_input)
    return len(norms)
