"""A monotone map from predicted to expected true quality, fitted on out-of-fold predictions.

QCResUNet ranks segmentations well but can be biased where most real segmentations lie (pessimistic for good
ones). Isotonic regression of the true on the predicted value removes such a bias without assuming a shape
and never reverses the ranking. The fit is scipy.optimize.isotonic_regression (pool-adjacent-violators)
on the samples sorted by prediction; samples with equal predictions are pooled first (their mean true value,
weighted by their count), so the fit does not depend on the order of tied samples. Between the fitted points
the map is linear, beyond them constant, and only the points where it bends are stored (the first and last
point of every constant block): the same function sklearn's IsotonicRegression(out_of_bounds="clip") would
give, in a few numbers that fit a JSON file.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import isotonic_regression


class IsotonicMap:
    """Non-decreasing piecewise-linear map x -> y through `knots_x`, `knots_y`, constant outside them."""

    def __init__(self, knots_x: Sequence[float], knots_y: Sequence[float]):
        self.knots_x = np.asarray(knots_x, dtype=np.float64)
        self.knots_y = np.asarray(knots_y, dtype=np.float64)
        if self.knots_x.ndim != 1 or self.knots_x.shape != self.knots_y.shape or self.knots_x.size == 0:
            raise ValueError("an isotonic map needs as many x as y knots, at least one")
        if np.any(np.diff(self.knots_x) < 0) or np.any(np.diff(self.knots_y) < 0):
            raise ValueError("isotonic map knots must be non-decreasing in x and in y")

    @classmethod
    def fit(cls, predicted: Sequence[float], true: Sequence[float]) -> IsotonicMap:
        """Least-squares non-decreasing fit of `true` on `predicted` (finite values, at least one pair)."""
        predicted, true = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
        if predicted.shape != true.shape or predicted.ndim != 1 or predicted.size == 0:
            raise ValueError("isotonic fit needs two equally long, non-empty 1D sequences")
        if not (np.all(np.isfinite(predicted)) and np.all(np.isfinite(true))):
            raise ValueError("isotonic fit needs finite values")
        order = np.argsort(predicted, kind="stable")
        sorted_x, sorted_true = predicted[order], true[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_x[1:] != sorted_x[:-1])))  # one per distinct x
        x = sorted_x[starts]
        counts = np.diff(np.append(starts, sorted_x.size)).astype(np.float64)
        mean_true = np.add.reduceat(sorted_true, starts) / counts
        y = isotonic_regression(mean_true, weights=counts, increasing=True).x
        # keep the ends of every constant block: linear interpolation between them is the same function
        if x.size > 2:
            flat = y[1:] == y[:-1]
            keep = ~(np.concatenate(([False], flat)) & np.concatenate((flat, [False])))
            x, y = x[keep], y[keep]
        fitted = cls.__new__(cls)  # increasing by construction: the constructor's checks are not needed
        fitted.knots_x, fitted.knots_y = x, y
        return fitted

    def __call__(self, values: Sequence[float] | float) -> np.ndarray:
        return np.interp(np.asarray(values, dtype=np.float64), self.knots_x, self.knots_y)

    def to_dict(self) -> dict:
        return {"method": "isotonic regression (scipy.optimize.isotonic_regression), linear between knots",
                "knots_x": self.knots_x.tolist(), "knots_y": self.knots_y.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> IsotonicMap:
        return cls(data["knots_x"], data["knots_y"])


CROSS_FIT_GROUPS = 5


def subject_groups(subjects: Sequence[str], num_groups: int = CROSS_FIT_GROUPS) -> np.ndarray:
    """Group index per sample: subjects sorted by name and dealt round-robin into `num_groups` groups, so all
    samples of a subject share a group (they are not independent of one another)."""
    names, inverse = np.unique(np.asarray(subjects).astype(str), return_inverse=True)
    return (np.arange(names.size) % max(1, min(num_groups, names.size)))[inverse]


def cross_fitted(predicted: Sequence[float], true: Sequence[float], groups: Sequence[int]) -> np.ndarray:
    """Each sample's prediction recalibrated by a map fitted on the other groups only (all samples when there
    is a single group): residuals of these values are as large as a new case's would be, not in-sample ones."""
    predicted, true, groups = (np.asarray(a) for a in (predicted, true, groups))
    if np.unique(groups).size < 2:
        return IsotonicMap.fit(predicted, true)(predicted)
    result = np.empty(predicted.shape, dtype=np.float64)
    for group in np.unique(groups):
        held_out = groups == group
        result[held_out] = IsotonicMap.fit(predicted[~held_out], true[~held_out])(predicted[held_out])
    return result


def identity_map() -> IsotonicMap:
    """The map that changes nothing (what --no_recalibration applies)."""
    return IsotonicMap([0.0, 1.0], [0.0, 1.0])
