"""Dice similarity coefficients: subject-level multi-class DSC and per-region binary DSC.

Empty conventions: both foregrounds empty -> 1.0 (nothing to find, nothing found), exactly one empty -> 0.0.
"""
from collections.abc import Sequence

import numpy as np

from nnqc.metrics.regions import region_masks


def _check_same_shape(reference: np.ndarray, query: np.ndarray) -> None:
    if reference.shape != query.shape:
        raise ValueError(f"reference and query differ in shape: {reference.shape} vs {query.shape}")


def _dice_from_counts(true_positives: int, false_positives: int, false_negatives: int) -> float:
    denominator = 2 * true_positives + false_positives + false_negatives
    if denominator == 0:
        return 1.0
    return float(2 * true_positives / denominator)


def multiclass_dice(reference: np.ndarray, query: np.ndarray) -> float:
    """Subject-level DSC over all labels at once (paper Appendix A).

    A foreground voxel of the query is a true positive only when it carries the reference's label; any
    other foreground voxel of the query is a false positive, and any reference foreground voxel the query
    labels differently (background included) is a false negative.
    """
    reference, query = np.asarray(reference), np.asarray(query)
    _check_same_shape(reference, query)
    agree = reference == query
    reference_foreground = reference != 0
    query_foreground = query != 0
    true_positives = np.count_nonzero(agree & reference_foreground)
    false_positives = np.count_nonzero(query_foreground) - true_positives
    false_negatives = np.count_nonzero(reference_foreground) - true_positives
    return _dice_from_counts(true_positives, false_positives, false_negatives)


def binary_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    _check_same_shape(a, b)
    intersection = np.count_nonzero(a & b)
    return _dice_from_counts(intersection, np.count_nonzero(b) - intersection, np.count_nonzero(a) - intersection)


def region_dice(reference: np.ndarray, query: np.ndarray, regions: Sequence[Sequence[int]]) -> np.ndarray:
    """Binary DSC of every region, float64 (C,)."""
    reference, query = np.asarray(reference), np.asarray(query)
    _check_same_shape(reference, query)
    reference_masks, query_masks = region_masks(reference, regions), region_masks(query, regions)
    return np.array([binary_dice(r, q) for r, q in zip(reference_masks, query_masks)], dtype=np.float64)
