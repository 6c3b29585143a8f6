"""The calibrated columns of a QC summary: recalibrated DSC and NSD, their intervals and the decision per case.

One call turns the ensemble's predictions of many cases (and their training-range checks) into the columns that
qc_summary.csv/.json, the printed table and the report show, so that all of them say the same.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nnqc.calibration.calibration_file import Calibration
from nnqc.calibration.conformal import DEFAULT_ALPHA
from nnqc.calibration.decision import FAIL, REVIEW, decide
from nnqc.calibration.training_range import RangeCheck

CALIBRATED_COLUMNS = ("calibrated_dsc", "dsc_lower", "dsc_upper", "calibrated_nsd", "nsd_lower", "nsd_upper",
                      "interval_finite", "calibration_bin", "calibration_samples_in_bin", "out_of_training_range",
                      "not_checked", "decision")


def calibrated_quality(calibration: Calibration, predicted_dsc: Sequence[float], predicted_nsd: Sequence[float],
                       alpha: float = DEFAULT_ALPHA, flag_below: float = 0.7,
                       range_checks: Sequence[RangeCheck | None] | None = None) -> pd.DataFrame:
    """CALIBRATED_COLUMNS for cases with the network's (ensemble mean) predicted DSC and NSD.

    calibrated_*: recalibrated point (raw when the Calibration was made with recalibrate=False); *_lower/upper:
    interval at coverage 1 - alpha; interval_finite False where the case's bin had too few calibration samples
    (the interval is then [0, 1]); out_of_training_range / not_checked: "; "-joined reasons; decision: pass,
    review or fail of the DSC interval against flag_below. A case without a prediction (NaN) gets NaN values
    and `review`.
    """
    predicted_dsc = np.atleast_1d(np.asarray(predicted_dsc, dtype=np.float64))
    predicted_nsd = np.atleast_1d(np.asarray(predicted_nsd, dtype=np.float64))
    checks = list(range_checks) if range_checks is not None else [None] * predicted_dsc.size
    if not predicted_dsc.size == predicted_nsd.size == len(checks):
        raise ValueError("calibrated_quality needs one predicted DSC, NSD and range check per case")
    columns = {name: np.full(predicted_dsc.size, np.nan) for name in CALIBRATED_COLUMNS[:6]}
    finite = np.zeros(predicted_dsc.size, dtype=bool)
    bins = np.full(predicted_dsc.size, -1)
    counts = np.zeros(predicted_dsc.size, dtype=int)
    known = np.isfinite(predicted_dsc) & np.isfinite(predicted_nsd)
    if known.any():
        dsc = calibration.intervals("dsc", predicted_dsc[known], alpha=alpha)
        nsd = calibration.intervals("nsd", predicted_dsc[known], predicted_nsd[known], alpha=alpha)
        for prefix, result in (("dsc", dsc), ("nsd", nsd)):
            columns[f"calibrated_{prefix}"][known] = result.point
            columns[f"{prefix}_lower"][known] = result.lower
            columns[f"{prefix}_upper"][known] = result.upper
        finite[known] = dsc.finite
        bins[known], counts[known] = dsc.bin, dsc.num_calibration
    table = pd.DataFrame(columns)
    table["interval_finite"], table["calibration_bin"], table["calibration_samples_in_bin"] = finite, bins, counts
    table["out_of_training_range"] = ["; ".join(map(str, c.reasons)) if c is not None else "" for c in checks]
    table["not_checked"] = ["; ".join(c.not_checked) if c is not None else "" for c in checks]
    table["decision"] = [
        decide(lo, hi, flag_below, c.reasons if c is not None else (), f) if k else REVIEW
        for lo, hi, c, f, k in zip(table["dsc_lower"], table["dsc_upper"], checks, finite, known)]
    return table


def calibrated_case_row(calibration: Calibration | None, predicted_dsc: float, predicted_nsd: float,
                        range_check: RangeCheck, partial_view: bool, alpha: float = DEFAULT_ALPHA,
                        flag_below: float = 0.7) -> dict:
    """CALIBRATED_COLUMNS of one case (JSON-ready). A partial view is never a `pass` (the network did not see all
    of the segmentation), only `fail` when even its interval's upper bound is below the threshold. Without a
    calibration the calibrated values are missing and the decision is empty; the range check is still reported."""
    if calibration is None:
        return {**{c: None for c in CALIBRATED_COLUMNS}, "interval_finite": False,
                "out_of_training_range": "; ".join(map(str, range_check.reasons)),
                "not_checked": "; ".join(range_check.not_checked), "decision": ""}
    table = calibrated_quality(calibration, [predicted_dsc], [predicted_nsd], alpha, flag_below, [range_check])
    row = json.loads(table.to_json(orient="records"))[0]  # numpy -> Python, NaN -> None
    if partial_view and row["decision"] != FAIL:
        row["decision"] = REVIEW
    return row
