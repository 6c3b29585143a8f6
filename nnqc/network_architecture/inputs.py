"""What the network sees, in torch: the z-scored image channels followed by the candidate's C region masks.

Prediction and training build the input with the same function, so that a model sees at inference exactly what
it was trained on. Training derives it from label maps *after* augmentation, so the masks line up with the
augmented images.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def region_masks_torch(seg: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, 1, *S) label maps -> (B, C, *S) bool region masks."""
    return torch.cat([torch.isin(seg, torch.as_tensor(labels, device=seg.device)) for labels in regions], dim=1)


def network_input(images: torch.Tensor, candidate: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """Concatenate the images (B, M, *S) with the candidate's (B, 1, *S) one-hot region masks -> (B, M + C, *S)."""
    return torch.cat((images, region_masks_torch(candidate, regions).to(images.dtype)), dim=1)
