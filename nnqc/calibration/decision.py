"""pass / review / fail per case from its DSC interval and the threshold (--flag_below).

A segmentation fails when its true DSC is below the threshold (the failure-detection benchmark's definition).
So: `fail` when the whole interval lies below the threshold (upper < threshold), `pass` when it lies at or above
it (lower >= threshold), `review` when the interval straddles the threshold, when it is not finite (too few
calibration samples) or when the case lies outside what the model was trained on, whatever its interval.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PASS, REVIEW, FAIL = "pass", "review", "fail"
DECISIONS = (PASS, REVIEW, FAIL)


def decide(lower: float, upper: float, threshold: float, out_of_range_reasons: Sequence = (),
           finite: bool = True) -> str:
    """The decision for one case; NaN bounds (no prediction) give `review`."""
    if out_of_range_reasons or not finite or not (np.isfinite(lower) and np.isfinite(upper)):
        return REVIEW
    if upper < threshold:
        return FAIL
    if lower >= threshold:
        return PASS
    return REVIEW


def decide_all(lower: Sequence[float], upper: Sequence[float], threshold: float,
               out_of_range_reasons: Sequence[Sequence] | None = None,
               finite: Sequence[bool] | None = None) -> list[str]:
    """decide() for every case; out_of_range_reasons and finite are per case (none and all finite by default)."""
    lower, upper = np.atleast_1d(np.asarray(lower, dtype=np.float64)), np.atleast_1d(np.asarray(upper, np.float64))
    reasons = out_of_range_reasons if out_of_range_reasons is not None else [()] * lower.size
    finite = finite if finite is not None else [True] * lower.size
    if not len(reasons) == len(finite) == lower.size == upper.size:
        raise ValueError("decide_all needs one lower, upper, reason list and finite flag per case")
    return [decide(lo, hi, threshold, r, bool(f)) for lo, hi, r, f in zip(lower, upper, reasons, finite)]


def decision_counts(decisions: Sequence[str]) -> dict[str, int]:
    return {d: int(sum(1 for x in decisions if x == d)) for d in DECISIONS}
