"""Ensemble agreement: how much the members of a segmenter's ensemble agree on a case.

The DKFZ segmentation failure-detection benchmark (Zenk et al. 2025) found the mean pairwise DSC among an
ensemble's members the strongest failure detector on 3D data: where the members disagree, the case is hard and
the segmentation likely wrong. DSC is the project's subject-level multi-class DSC (nnqc.metrics.dice); two empty
members agree perfectly (DSC 1), an empty and a non-empty one not at all (0).
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from nnqc.metrics.dice import multiclass_dice


def pairwise_dsc(members: Sequence[np.ndarray]) -> np.ndarray:
    """Symmetric matrix of the DSC between every two members (1 on the diagonal)."""
    if len(members) < 2:
        raise ValueError(f"ensemble agreement needs at least two members, got {len(members)}")
    shapes = {np.shape(m) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"the members' label maps differ in shape: {sorted(shapes)}")
    n = len(members)
    matrix = np.eye(n)
    for i, j in combinations(range(n), 2):
        matrix[i, j] = matrix[j, i] = multiclass_dice(members[i], members[j])
    return matrix


def mean_pairwise_dsc(members: Sequence[np.ndarray]) -> float:
    """Mean DSC over all pairs of members: 1 when they all agree."""
    matrix = pairwise_dsc(members)
    return float(matrix[np.triu_indices(len(members), 1)].mean())


def dsc_to_members(segmentation: np.ndarray, members: Sequence[np.ndarray]) -> float:
    """Mean DSC between the assessed segmentation and each member (a member that is the assessed segmentation
    itself counts as agreeing fully)."""
    if not members:
        raise ValueError("no ensemble member given")
    return float(np.mean([multiclass_dice(m, segmentation) for m in members]))
