"""Failure-detection metrics: hand-computed small cases, brute force from the definitions, sklearn's AUROC."""
import io
import itertools

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import roc_auc_score

from nnqc.evaluation.calibration_evaluation import calibration_evaluation, decisions_against_truth
from nnqc.evaluation.calibration_plots import intervals_png, risk_coverage_png
from nnqc.evaluation.failure_detection import (
    aurc,
    excess_aurc,
    failure_auroc,
    failure_detection_summary,
    interval_summary,
    mean_error_above,
    normalised_aurc,
    optimal_aurc,
    random_aurc,
    risk_coverage_curve,
)

RISK = np.array([0.1, 0.5, 0.2, 0.9])
PERFECT_CONFIDENCE = np.array([0.9, 0.4, 0.8, 0.1])  # orders the cases exactly by risk
MIXED_CONFIDENCE = np.array([0.9, 0.4, 0.1, 0.8])    # the worst case is the second most confident


def brute_force_aurc(risk: np.ndarray, confidence: np.ndarray) -> float:
    """From the definition, without ties: keep the k most confident cases for k = n..1, selective risk = their
    mean risk at coverage k / n, trapezoidal area over those n points."""
    n = len(risk)
    coverages, risks = [], []
    for k in range(n, 0, -1):
        kept = sorted(range(n), key=lambda i: confidence[i], reverse=True)[:k]
        coverages.append(k / n)
        risks.append(sum(risk[i] for i in kept) / k)
    return float(-np.trapezoid(risks, coverages))


def test_aurc_hand_computed():
    # perfect ranking: selective risks 1.7/4, 0.8/3, 0.3/2, 0.1 at coverages 1, 3/4, 1/2, 1/4
    optimal = ((1.7 / 4 + 0.8 / 3) / 2 + (0.8 / 3 + 0.3 / 2) / 2 + (0.3 / 2 + 0.1) / 2) / 4
    assert aurc(RISK, PERFECT_CONFIDENCE) == pytest.approx(optimal)
    assert optimal_aurc(RISK) == pytest.approx(optimal)
    assert excess_aurc(RISK, PERFECT_CONFIDENCE) == pytest.approx(0, abs=1e-12)
    assert normalised_aurc(RISK, PERFECT_CONFIDENCE) == pytest.approx(1)
    # mixed: selective risks 0.425, 1.5/3, 1.0/2, 0.1
    mixed = ((0.425 + 0.5) / 2 + (0.5 + 0.5) / 2 + (0.5 + 0.1) / 2) / 4
    assert aurc(RISK, MIXED_CONFIDENCE) == pytest.approx(mixed)
    assert excess_aurc(RISK, MIXED_CONFIDENCE) == pytest.approx(mixed - optimal)
    assert random_aurc(RISK) == pytest.approx(0.425)
    assert normalised_aurc(RISK, MIXED_CONFIDENCE) == pytest.approx((0.425 - mixed) / (0.425 - optimal))
    assert normalised_aurc(RISK, MIXED_CONFIDENCE) == pytest.approx(3 / 7)
    # the most confident case being the worst one makes the ranking worse than random
    assert normalised_aurc(RISK, -PERFECT_CONFIDENCE) < 0


def test_aurc_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    for n in (2, 7, 40):
        risk, confidence = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
        assert aurc(risk, confidence) == pytest.approx(brute_force_aurc(risk, confidence), rel=1e-12)
        assert optimal_aurc(risk) == pytest.approx(brute_force_aurc(risk, -risk), rel=1e-12)
        assert optimal_aurc(risk) <= aurc(risk, confidence) + 1e-12


def test_random_reference_is_the_mean_risk_and_permutations_average_to_n_minus_1_over_n_of_it():
    risk = np.array([0.05, 0.3, 0.6, 0.2, 0.95])
    n = len(risk)
    average = np.mean([aurc(risk, np.array(p, dtype=float)) for p in itertools.permutations(range(n))])
    assert average == pytest.approx((n - 1) / n * random_aurc(risk), rel=1e-12)


def test_ties_in_confidence_are_handled_as_the_benchmark_does():
    # confidences 0.5, 0.5, 0.9: a point after withholding the first 0.5 case (risk (0.2 + 0) / 2 at coverage
    # 2/3), the second tied case goes into the closing flat segment at coverage 0
    risk, confidence = np.array([0.4, 0.2, 0.0]), np.array([0.5, 0.5, 0.9])
    coverages, risks, weights = risk_coverage_curve(risk, confidence)
    np.testing.assert_allclose(coverages, [1, 2 / 3, 0])
    np.testing.assert_allclose(risks, [0.2, 0.1, 0.1])
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3])
    assert aurc(risk, confidence) == pytest.approx((0.2 + 0.1) / 2 / 3 + 0.1 / 3)
    # weights always add up to (n - 1) / n, with or without ties
    rng = np.random.default_rng(1)
    tied = np.round(rng.uniform(0, 1, 50), 1)
    assert risk_coverage_curve(rng.uniform(0, 1, 50), tied)[2].sum() == pytest.approx(49 / 50)


def brute_force_auroc(success: np.ndarray, confidence: np.ndarray) -> float:
    pairs = [(1.0 if cs > cf else 0.5 if cs == cf else 0.0)
             for cs in confidence[success] for cf in confidence[~success]]
    return float(np.mean(pairs))


def test_failure_auroc_hand_computed_brute_force_and_sklearn():
    true_dsc, confidence = np.array([0.9, 0.8, 0.3, 0.6]), np.array([0.7, 0.5, 0.5, 0.8])
    # successes (DSC >= 0.7) have 0.7, 0.5; failures 0.5, 0.8: pairs 1 + 0 + 0.5 + 0 over 4
    assert failure_auroc(true_dsc, confidence, 0.7) == pytest.approx(0.375)
    rng = np.random.default_rng(2)
    true_dsc = rng.uniform(0, 1, 200)
    confidence = np.round(np.clip(true_dsc + rng.normal(0, 0.2, 200), 0, 1), 1)  # many ties
    success = true_dsc >= 0.7
    value = failure_auroc(true_dsc, confidence, 0.7)
    assert value == pytest.approx(roc_auc_score(success, confidence), rel=1e-12)
    assert value == pytest.approx(brute_force_auroc(success, confidence), rel=1e-12)
    assert np.isnan(failure_auroc(np.array([0.8, 0.9]), np.array([0.1, 0.2]), 0.7))  # no failure


def test_failure_detection_summary_collects_the_figures():
    true_dsc = 1 - RISK
    summary = failure_detection_summary(true_dsc, MIXED_CONFIDENCE, threshold=0.7)
    assert summary["aurc"] == pytest.approx(aurc(RISK, MIXED_CONFIDENCE))
    assert summary["optimal_aurc"] == pytest.approx(optimal_aurc(RISK))
    assert summary["random_aurc"] == pytest.approx(0.425)
    assert summary["num_failures"] == 2  # true DSC 0.5 and 0.1
    assert summary["num_tied_cases"] == 0


def test_interval_summary_overall_and_per_true_dsc_bin():
    true = np.array([0.05, 0.5, 0.55, 0.95, 1.0])
    lower = np.array([0.0, 0.4, 0.6, 0.9, 0.8])
    upper = np.array([0.1, 0.6, 0.7, 1.0, 1.0])
    summary = interval_summary(true, lower, upper)
    assert summary["n"] == 5
    assert summary["coverage"] == pytest.approx(4 / 5)  # 0.55 lies below [0.6, 0.7]
    assert summary["mean_width"] == pytest.approx(np.mean(upper - lower))
    bins = summary["per_true_dsc_bin"]
    assert bins[0] == {"true_dsc_range": [0.0, 0.1], "n": 1, "coverage": 1.0, "mean_width": pytest.approx(0.1)}
    assert bins[5]["n"] == 2 and bins[5]["coverage"] == pytest.approx(0.5)
    assert bins[9]["n"] == 2 and bins[9]["coverage"] == 1.0  # DSC 1.0 falls in the last bin
    assert bins[3] == {"true_dsc_range": [0.3, 0.4], "n": 0, "coverage": None, "mean_width": None}


def test_mean_error_above():
    result = mean_error_above([0.9, 0.95, 0.5], [0.9, 0.95, 0.5], [0.8, 0.85, 0.9])
    assert result["n"] == 2 and result["mean_error"] == pytest.approx(-0.1)
    assert mean_error_above([0.5], [0.5], [0.4])["mean_error"] is None


def test_risk_coverage_png_is_an_image():
    rng = np.random.default_rng(3)
    true_dsc = rng.uniform(0, 1, 30)
    image = imread(io.BytesIO(risk_coverage_png(true_dsc, true_dsc + rng.normal(0, 0.1, 30))), format="png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300


def test_decisions_against_truth_and_the_calibration_evaluation():
    true_dsc = np.array([0.9, 0.5, 0.8, 0.3, 0.75])
    decisions = ["pass", "pass", "fail", "fail", "review"]
    result = decisions_against_truth(decisions, true_dsc, 0.7)
    assert result["counts"] == {"pass": 2, "review": 1, "fail": 2}
    assert result["missed_failures"] == 1 and result["false_alarms"] == 1
    assert result["by_truth"]["review"] == {"true_failure": 0, "true_success": 1}
    predicted = np.array([0.85, 0.6, 0.7, 0.2, 0.7])
    calibrated = predicted + 0.05
    lower, upper = calibrated - 0.1, calibrated + 0.1
    evaluation = calibration_evaluation(true_dsc, true_dsc, predicted, predicted, calibrated, calibrated, lower,
                                        upper, lower, upper, decisions, threshold=0.7, alpha=0.1)
    assert evaluation["failure_detection"]["aurc"] == pytest.approx(aurc(1 - true_dsc, predicted))
    assert evaluation["intervals"]["dsc"]["coverage"] == pytest.approx(4 / 5)  # 0.5 lies below [0.55, 0.75]
    assert evaluation["intervals"]["target_coverage"] == pytest.approx(0.9)
    high = evaluation["mean_error_true_dsc_above_0_85"]["dsc"]
    assert high["raw"]["mean_error"] == pytest.approx(-0.05) and high["recalibrated"]["mean_error"] == pytest.approx(0)
    assert evaluation["decisions"]["missed_failures"] == 1


def test_intervals_png_is_an_image_and_says_when_cases_are_left_out():
    rng = np.random.default_rng(4)
    point = rng.uniform(0, 1, 80)
    decisions = ["pass" if p > 0.8 else "fail" if p < 0.5 else "review" for p in point]
    png = intervals_png([f"case{i}" for i in range(80)], point, np.clip(point - 0.1, 0, 1),
                        np.clip(point + 0.1, 0, 1), decisions, 0.7, true=point, max_cases=20)
    image = imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 300
