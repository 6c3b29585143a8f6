"""Failure-detection metrics as the DKFZ segmentation failure-detection benchmark defines them (Zenk et al.
2025, which takes them from fd-shifts, Jaeger et al. 2023), and the empirical coverage of prediction intervals.

risk = 1 - true DSC, confidence = predicted DSC. Sorting the cases by confidence and withholding the least
confident ones first, the selective risk at coverage k/n is the mean risk of the k most confident cases.

- AURC: the area under that risk-coverage curve by the trapezoidal rule, each segment weighted by the fraction of
  cases withheld along it. Without ties the points are (k/n, selective risk) for k = n, ..., 1, so the area spans
  coverage 1/n to 1. Ties (several cases with the same confidence) are handled as the benchmark does: a point
  is added only after withholding a case whose confidence differs from the one withheld before it, the cases
  withheld in between are counted into the next segment's weight, and a run of ties at the top end closes the
  curve with a flat segment. Within a run of equal confidences the benchmark leaves the order to numpy's
  default sort; here it is the input order (a stable sort), so the figure is reproducible.
  `num_tied_cases` in the summary says how many cases share their confidence with another.
- optimal AURC: the AURC of the confidence that orders the cases by their true risk (confidence = -risk).
- random AURC: the mean risk, the benchmark's reference for a random ranking (the flat curve at the mean risk
  over all coverages; a random order's expected trapezoid over n points is (n - 1)/n of it).
- e-AURC (excess AURC) = AURC - optimal AURC.
- normalised AURC = (random AURC - AURC) / (random AURC - optimal AURC), the benchmark's "norm-aurc":
  1 for the optimal ranking, 0 for a random one, negative when worse than random.
- failure AUROC at a threshold: failure = true DSC < threshold; the area under the ROC curve of the confidence
  telling successes from failures (the probability that a random success is more confident than a random
  failure, ties counting one half), as the benchmark computes it with successes as the positive class.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from nnqc.sampling import N_BINS, dsc_bins


def _risk_and_confidence(risk: Sequence[float], confidence: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    risk, confidence = np.asarray(risk, dtype=np.float64).ravel(), np.asarray(confidence, dtype=np.float64).ravel()
    if risk.shape != confidence.shape or risk.size == 0:
        raise ValueError("risks and confidences must be equally long and not empty")
    if not (np.all(np.isfinite(risk)) and np.all(np.isfinite(confidence))):
        raise ValueError("risks and confidences must be finite")
    return risk, confidence


def risk_coverage_curve(risk: Sequence[float], confidence: Sequence[float]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coverages, selective risks, weights) of the benchmark's risk-coverage curve: coverages from 1 down,
    weights[i] the fraction of cases withheld between point i and point i + 1."""
    risk, confidence = _risk_and_confidence(risk, confidence)
    n = risk.size
    order = np.argsort(confidence, kind="stable")
    risk_sorted, confidence_sorted = risk[order], confidence[order]
    remaining_risk = np.cumsum(risk_sorted[::-1])[::-1]  # remaining_risk[i]: sum of risks of cases i..n-1
    coverages, risks, weights = [1.0], [remaining_risk[0] / n], []
    pending = 0
    for i in range(n - 1):  # withhold case i (the least confident left)
        pending += 1
        if i == 0 or confidence_sorted[i] != confidence_sorted[i - 1]:
            coverages.append((n - 1 - i) / n)
            risks.append(remaining_risk[i + 1] / (n - 1 - i))
            weights.append(pending / n)
            pending = 0
    if pending:
        coverages.append(0.0)
        risks.append(risks[-1])
        weights.append(pending / n)
    return np.array(coverages), np.array(risks), np.array(weights)


def aurc(risk: Sequence[float], confidence: Sequence[float]) -> float:
    _, risks, weights = risk_coverage_curve(risk, confidence)
    return float(np.sum((risks[:-1] + risks[1:]) / 2 * weights))


def optimal_aurc(risk: Sequence[float]) -> float:
    risk = np.asarray(risk, dtype=np.float64)
    return aurc(risk, -risk)


def random_aurc(risk: Sequence[float]) -> float:
    return float(np.mean(np.asarray(risk, dtype=np.float64)))


def excess_aurc(risk: Sequence[float], confidence: Sequence[float]) -> float:
    return aurc(risk, confidence) - optimal_aurc(risk)


def normalised_aurc(risk: Sequence[float], confidence: Sequence[float]) -> float:
    """NaN when random and optimal AURC coincide (all risks equal: no ranking is better than another)."""
    reference, best = random_aurc(risk), optimal_aurc(risk)
    if np.isclose(reference, best):
        return float("nan")
    return float((reference - aurc(risk, confidence)) / (reference - best))


def failure_auroc(true_dsc: Sequence[float], confidence: Sequence[float], threshold: float) -> float:
    """AUROC of the confidence for success (true DSC >= threshold) against failure; NaN without both."""
    true_dsc, confidence = _risk_and_confidence(true_dsc, confidence)
    success = true_dsc >= threshold
    n_success, n_failure = int(success.sum()), int((~success).sum())
    if n_success == 0 or n_failure == 0:
        return float("nan")
    ranks = rankdata(confidence)  # average ranks: a tie between a success and a failure counts one half
    return float((ranks[success].sum() - n_success * (n_success + 1) / 2) / (n_success * n_failure))


def num_tied_cases(confidence: Sequence[float]) -> int:
    """How many cases share their confidence with at least one other case."""
    _, counts = np.unique(np.asarray(confidence, dtype=np.float64), return_counts=True)
    return int(counts[counts > 1].sum())


def failure_detection_summary(true_dsc: Sequence[float], predicted_dsc: Sequence[float], threshold: float) -> dict:
    """All failure-detection figures of predicted against true DSC, for qc_evaluation.json."""
    true_dsc, predicted_dsc = _risk_and_confidence(true_dsc, predicted_dsc)
    risk = 1 - true_dsc
    return {
        "n": int(true_dsc.size),
        "aurc": aurc(risk, predicted_dsc),
        "e_aurc": excess_aurc(risk, predicted_dsc),
        "normalised_aurc": normalised_aurc(risk, predicted_dsc),
        "optimal_aurc": optimal_aurc(risk),
        "random_aurc": random_aurc(risk),
        "failure_threshold": float(threshold),
        "num_failures": int((true_dsc < threshold).sum()),
        "failure_auroc": failure_auroc(true_dsc, predicted_dsc, threshold),
        "num_tied_cases": num_tied_cases(predicted_dsc),
        "definitions": "risk = 1 - true DSC, confidence = predicted DSC (DKFZ segmentation failure-detection "
                       "benchmark); normalised AURC = (random - AURC) / (random - optimal), 1 optimal, 0 random; "
                       "failure = true DSC < threshold",
    }


def _coverage_and_width(true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict:
    if true.size == 0:
        return {"n": 0, "coverage": None, "mean_width": None}
    inside = (lower <= true) & (true <= upper)
    return {"n": int(true.size), "coverage": float(inside.mean()), "mean_width": float(np.mean(upper - lower))}


def interval_summary(true: Sequence[float], lower: Sequence[float], upper: Sequence[float],
                     true_dsc: Sequence[float] | None = None, n_bins: int = N_BINS) -> dict:
    """Empirical coverage (share of true values inside [lower, upper]) and mean width, overall and per bin of
    the true DSC (the project's 10 DSC bins; `true` itself when true_dsc is not given, as for the DSC)."""
    true = np.asarray(true, dtype=np.float64).ravel()
    lower, upper = np.asarray(lower, dtype=np.float64).ravel(), np.asarray(upper, dtype=np.float64).ravel()
    if not true.shape == lower.shape == upper.shape:
        raise ValueError("interval_summary needs one lower and one upper bound per true value")
    true_dsc = true if true_dsc is None else np.asarray(true_dsc, dtype=np.float64).ravel()
    which = dsc_bins(true_dsc, n_bins)
    summary = _coverage_and_width(true, lower, upper)
    summary["per_true_dsc_bin"] = [
        {"true_dsc_range": [b / n_bins, (b + 1) / n_bins], **_coverage_and_width(true[which == b],
                                                                                 lower[which == b],
                                                                                 upper[which == b])}
        for b in range(n_bins)]
    return summary


def mean_error_above(true_dsc: Sequence[float], true: Sequence[float], predicted: Sequence[float],
                     dsc_above: float = 0.85) -> dict:
    """Mean signed error (predicted - true) over the cases with true DSC > dsc_above: the bias on good
    segmentations that recalibration is to remove. None when no case is that good."""
    true_dsc, true = np.asarray(true_dsc, dtype=np.float64), np.asarray(true, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    high = true_dsc > dsc_above
    return {"true_dsc_above": float(dsc_above), "n": int(high.sum()),
            "mean_error": float(np.mean(predicted[high] - true[high])) if high.any() else None}
