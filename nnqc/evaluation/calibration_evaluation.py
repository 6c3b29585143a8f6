"""How trustworthy the calibrated output was, once true DSC and NSD are known: the part of qc_evaluation.json
that judges failure detection, intervals, recalibration and decisions."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnqc.calibration.decision import DECISIONS, FAIL, PASS, decision_counts
from nnqc.evaluation.failure_detection import failure_detection_summary, interval_summary, mean_error_above


def decisions_against_truth(decisions: Sequence[str], true_dsc: Sequence[float], threshold: float) -> dict:
    """Counts per decision, split by whether the case truly failed (true DSC < threshold): a `pass` of a true
    failure is a missed failure, a `fail` of a true success a false alarm."""
    true_failure = np.asarray(true_dsc, dtype=np.float64) < threshold
    decisions = list(decisions)
    split = {d: {"true_failure": int(sum(1 for x, f in zip(decisions, true_failure) if x == d and f)),
                 "true_success": int(sum(1 for x, f in zip(decisions, true_failure) if x == d and not f))}
             for d in DECISIONS}
    return {"counts": decision_counts(decisions), "by_truth": split,
            "missed_failures": split[PASS]["true_failure"], "false_alarms": split[FAIL]["true_success"]}


def calibration_evaluation(true_dsc: Sequence[float], true_nsd: Sequence[float], predicted_dsc: Sequence[float],
                           predicted_nsd: Sequence[float], calibrated_dsc: Sequence[float],
                           calibrated_nsd: Sequence[float], dsc_lower: Sequence[float], dsc_upper: Sequence[float],
                           nsd_lower: Sequence[float], nsd_upper: Sequence[float], decisions: Sequence[str],
                           threshold: float, alpha: float) -> dict:
    """Failure detection of the raw and of the recalibrated DSC (isotonic recalibration can only merge ranks,
    so the raw ranking is the one to judge; both are given), the intervals' coverage and width overall and per
    true-DSC bin, the mean error on good segmentations (true DSC > 0.85) before and after recalibration, and
    the decisions against the truth."""
    true_dsc, true_nsd = np.asarray(true_dsc, dtype=np.float64), np.asarray(true_nsd, dtype=np.float64)
    return {
        "failure_detection": failure_detection_summary(true_dsc, predicted_dsc, threshold),
        "failure_detection_recalibrated": failure_detection_summary(true_dsc, calibrated_dsc, threshold),
        "intervals": {"alpha": float(alpha), "target_coverage": 1 - float(alpha),
                      "dsc": interval_summary(true_dsc, dsc_lower, dsc_upper),
                      "nsd": interval_summary(true_nsd, nsd_lower, nsd_upper, true_dsc=true_dsc)},
        "mean_error_true_dsc_above_0_85": {
            "dsc": {"raw": mean_error_above(true_dsc, true_dsc, predicted_dsc),
                    "recalibrated": mean_error_above(true_dsc, true_dsc, calibrated_dsc)},
            "nsd": {"raw": mean_error_above(true_dsc, true_nsd, predicted_nsd),
                    "recalibrated": mean_error_above(true_dsc, true_nsd, calibrated_nsd)}},
        "decisions": decisions_against_truth(decisions, true_dsc, threshold),
    }
