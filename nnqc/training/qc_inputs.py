"""What the network sees and what it is trained against, in torch (used by training and inference alike).

Input: the z-scored image channels followed by the query's C region masks. SEM targets: per region,
region(query) XOR region(reference) (SPEC §2). Both are derived from label maps *after* augmentation, so
the masks and error maps always line up with the augmented images.
"""
from __future__ import annotations

from typing import Sequence

import torch


def region_masks_torch(seg: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, 1, *S) label maps -> (B, C, *S) bool region masks."""
    return torch.cat([torch.isin(seg, torch.as_tensor(labels, device=seg.device)) for labels in regions], dim=1)


def network_input(images: torch.Tensor, candidate: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """Concatenate the images (B, M, *S) with the candidate's (B, 1, *S) one-hot region masks -> (B, M + C, *S)."""
    return torch.cat((images, region_masks_torch(candidate, regions).to(images.dtype)), dim=1)


def sem_targets(reference: torch.Tensor, candidate: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, C, *S) bool segmentation error maps of the candidate against the reference."""
    return region_masks_torch(candidate, regions) ^ region_masks_torch(reference, regions)
