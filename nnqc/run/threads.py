"""Torch thread counts for nnQC's entry points, set as nnU-Net's own entry points set them."""
from __future__ import annotations

import os

import torch


def set_thread_counts(device_type: str) -> None:
    """Torch threads as nnU-Net's entry points set them: every core on the CPU; one (intra- and inter-op) on CUDA,
    where more threads only compete with the augmentation workers. Call it before torch does any parallel work
    (torch refuses a late set_num_interop_threads)."""
    if device_type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    elif device_type == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
