"""Which precision a training step runs in, decided in one place so that `--fp32` means fp32 on every device.

nnU-Net's trainer runs CUDA steps under fp16 autocast with a gradient scaler unconditionally; nnQC keeps that as
the default (the paper trains with mixed precision) but lets `nnQC_train --fp32` (trainer attribute
`cuda_mixed_precision = False`) turn both off, as `cpu_bf16_autocast = False` does for bf16 on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepPrecision:
    """autocast_device None: no autocast (fp32); grad_scaler: whether the loss is scaled (fp16 only)."""
    autocast_device: str | None
    autocast_dtype: torch.dtype | None
    grad_scaler: bool


FP32 = StepPrecision(None, None, False)


def step_precision(device_type: str, cuda_mixed_precision: bool, cpu_bf16: bool) -> StepPrecision:
    """CUDA: fp16 autocast + gradient scaler unless mixed precision is off; CPU: bf16 autocast (no scaler: bf16
    has fp32's exponent range) where `cpu_bf16` (asked for and native, see nnQCTrainer.uses_cpu_bf16); else fp32."""
    if device_type == "cuda":
        return StepPrecision("cuda", torch.float16, True) if cuda_mixed_precision else FP32
    if device_type == "cpu" and cpu_bf16:
        return StepPrecision("cpu", torch.bfloat16, False)
    return FP32
