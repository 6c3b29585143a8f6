"""Which precision a training step runs in, decided in one place so that `--fp32` means fp32 on every device.

nnU-Net's trainer runs CUDA steps under fp16 autocast with a gradient scaler unconditionally; nnQC keeps that as
the default (the paper trains with mixed precision) but lets `nnQC_train --fp32` (trainer attribute
`cuda_mixed_precision = False`) turn both off, as `cpu_bf16_autocast = False` does for bf16 on the CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from nnqc.cpu_features import OVERRIDE_VARIABLE


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


def describe_precision(device_type: str, cuda_mixed_precision: bool, cpu_bf16_autocast: bool, cpu_bf16: bool
                       ) -> str:
    """The training log's account of step_precision: what runs in which precision, and how to change it.
    cpu_bf16_autocast: bf16 asked for on the CPU; cpu_bf16: asked for and native (the step runs in bf16)."""
    if device_type == "cuda":
        return ("mixed precision (fp16 autocast, loss in fp32)" if cuda_mixed_precision
                else "fp32 (cuda_mixed_precision = False / --fp32)")
    if cpu_bf16:
        return (f"bf16 autocast on this CPU's native bf16 (instance norms and loss in fp32; "
                f"cpu_bf16_autocast = False or {OVERRIDE_VARIABLE}=0 for fp32)")
    if device_type == "cpu" and cpu_bf16_autocast:
        if os.environ.get(OVERRIDE_VARIABLE, "").strip() == "0":
            return f"fp32 ({OVERRIDE_VARIABLE}=0)"
        return "fp32 (this CPU has no native bf16)"
    return "fp32"
