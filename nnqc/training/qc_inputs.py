"""What the network is trained against, in torch: SEM targets per region, region(query) XOR region(reference)
(SPEC §2), derived from label maps *after* augmentation so that the error maps line up with the augmented images.
The network's input is built by nnqc.network_architecture.inputs, shared with prediction.
"""
from __future__ import annotations

from typing import Sequence

import torch

from nnqc.network_architecture.inputs import region_masks_torch


def sem_targets(reference: torch.Tensor, candidate: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, C, *S) bool segmentation error maps of the candidate against the reference."""
    return region_masks_torch(candidate, regions) ^ region_masks_torch(reference, regions)
