"""Calibrated decisions: conformal coverage on synthetic exchangeable residuals, recalibration, the calibration
file's rebuilds, training-range reasons and pass / review / fail."""
import os

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.isotonic import IsotonicRegression

from nnqc.calibration.calibrated_quality import CALIBRATED_COLUMNS, calibrated_quality
from nnqc.calibration.calibration_file import (
    CALIBRATION_FILE,
    OUT_OF_FOLD_PREDICTIONS,
    Calibration,
    CalibrationDataMissing,
    CalibrationError,
    CorruptCalibrationData,
    build_calibration,
    load_or_build_calibration,
)
from nnqc.calibration.conformal import (
    MondrianBins,
    MondrianConformal,
    choose_bins,
    conformal_quantile,
    minimum_calibration_samples,
)
from nnqc.calibration.decision import FAIL, PASS, REVIEW, decide, decide_all, decision_counts
from nnqc.calibration.recalibration import IsotonicMap, cross_fitted, subject_groups
from nnqc.calibration.training_range import (
    CaseStatistics,
    TrainingCoverage,
    case_statistics,
    out_of_training_range,
    training_intensity_range,
)
from nnqc.preprocessing.intensity_statistics import IMAGE_INTENSITIES_PROPERTY, image_intensity_statistics


def synthetic_predictions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) DSC like QC's natural distribution: mostly good segmentations, predictions
    pessimistic by 0.05 and noisier in the middle of the range (heteroscedastic)."""
    predicted = rng.beta(4, 1.5, n)
    sd = 0.02 + 0.2 * predicted * (1 - predicted)
    return predicted, np.clip(predicted + 0.05 + rng.normal(0, sd), 0, 1)


def binomial_99(successes: int, trials: int, low_p: float, high_p: float) -> bool:
    """Whether `successes` of `trials` lies within the two-sided 99 % binomial bounds of a probability in
    [low_p, high_p] (the conformal guarantee: at least 1 - α, at most 1 - α + 1 / (n + 1))."""
    return binom.ppf(0.005, trials, low_p) <= successes <= binom.ppf(0.995, trials, min(high_p, 1.0))


# ---- conformal ------------------------------------------------------------------------------------------------
def test_finite_sample_quantile_and_too_few_samples():
    scores = np.arange(1, 10, dtype=float)  # 9 scores: rank ceil(10 * 0.9) = 9, the largest
    assert conformal_quantile(scores, 0.1) == 9
    assert conformal_quantile(scores, 0.2) == 8  # ceil(10 * 0.8) = 8
    assert conformal_quantile(scores[:8], 0.1) == float("inf")  # ceil(9 * 0.9) = 9 > 8
    assert minimum_calibration_samples(0.1) == 9 and minimum_calibration_samples(0.2) == 4
    with pytest.raises(ValueError, match="alpha"):
        conformal_quantile(scores, 1.5)


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_coverage_within_binomial_bounds_overall_and_per_mondrian_bin(alpha):
    """Each trial: a fresh calibration set of 200 samples (5 equal-count bins of 40) and one fresh test case;
    the count of covered test cases is binomial with p in [1 - α, 1 - α + 1/41] per bin and overall."""
    rng = np.random.default_rng(int(alpha * 100))
    trials, n_calibration = 4000, 200
    covered, bins, plain_covered = np.zeros(trials, bool), np.zeros(trials, int), np.zeros(trials, bool)
    for t in range(trials):
        predicted, true = synthetic_predictions(rng, n_calibration + 1)
        mondrian = MondrianConformal.fit(predicted[:-1], true[:-1], predicted[:-1] + 0.05)
        assert mondrian.bins.num_bins == 5
        result = mondrian.intervals(predicted[-1:], predicted[-1:] + 0.05, alpha)
        covered[t] = result.lower[0] <= true[-1] <= result.upper[0]
        bins[t] = result.bin[0]
        plain = MondrianConformal.fit(predicted[:-1], true[:-1], predicted[:-1] + 0.05, bins=MondrianBins(()))
        result = plain.intervals(predicted[-1:], predicted[-1:] + 0.05, alpha)
        plain_covered[t] = result.lower[0] <= true[-1] <= result.upper[0]
    assert binomial_99(int(covered.sum()), trials, 1 - alpha, 1 - alpha + 1 / 41)
    assert binomial_99(int(plain_covered.sum()), trials, 1 - alpha, 1 - alpha + 1 / 201)
    for b in range(5):
        members = bins == b
        assert members.sum() > 500
        assert binomial_99(int(covered[members].sum()), int(members.sum()), 1 - alpha, 1 - alpha + 1 / 41), b


def test_mondrian_bins_have_enough_samples_even_with_tied_predictions():
    rng = np.random.default_rng(4)
    predicted = np.concatenate([np.zeros(150), np.ones(30), rng.uniform(0, 1, 100)])  # clamped outputs tie
    bins = choose_bins(predicted, min_samples_per_bin=40)
    counts = np.bincount(bins.assign(predicted), minlength=bins.num_bins)
    assert counts.sum() == predicted.size and counts.min() >= 40 and bins.num_bins >= 2
    assert choose_bins(predicted[:79], min_samples_per_bin=40).num_bins == 1
    equal_count = choose_bins(rng.uniform(0, 1, 1000), min_samples_per_bin=40)
    assert equal_count.num_bins == 10  # at most 10 bins however many samples


def test_intervals_are_clipped_to_0_1_and_say_when_a_bin_has_too_few_samples():
    bins = MondrianBins((0.5,))
    conformal = MondrianConformal(bins, [np.full(5, 0.3), np.linspace(0, 0.3, 50)])
    result = conformal.intervals([0.1, 0.98, 0.02], [0.1, 0.98, 0.02], alpha=0.1)
    assert np.all(result.lower >= 0) and np.all(result.upper <= 1)
    # 5 samples in the low bin: too few for 90 % -> [0, 1], not finite
    assert not result.finite[0] and (result.lower[0], result.upper[0]) == (0.0, 1.0)
    assert result.num_calibration.tolist() == [5, 50, 5]
    q = conformal_quantile(np.linspace(0, 0.3, 50), 0.1)
    assert result.finite[1] and result.upper[1] == 1.0 and result.lower[1] == pytest.approx(0.98 - q)


def test_normalised_variant_scales_by_the_spread_with_a_floor():
    conformal = MondrianConformal.fit(np.full(99, 0.8), np.full(99, 0.8) + np.linspace(-0.1, 0.1, 99),
                                      np.full(99, 0.8), bins=MondrianBins(()), spread=np.full(99, 0.05),
                                      spread_floor=0.02)
    q = conformal.quantiles(0.1)[0]
    assert q == pytest.approx(conformal_quantile(np.abs(np.linspace(-0.1, 0.1, 99)) / 0.05, 0.1))
    result = conformal.intervals([0.5, 0.5], [0.5, 0.5], 0.1, spread=[0.1, 0.0])
    np.testing.assert_allclose(result.width, [2 * q * 0.1, 2 * q * 0.02])  # a zero spread gets the floor
    with pytest.raises(ValueError, match="spread"):
        conformal.intervals([0.5], [0.5], 0.1)


# ---- recalibration --------------------------------------------------------------------------------------------
def test_isotonic_map_equals_sklearn_and_is_monotone():
    rng = np.random.default_rng(5)
    predicted = np.round(rng.uniform(0, 1, 300), 2)  # with ties
    true = np.clip(predicted ** 2 + rng.normal(0, 0.1, 300), 0, 1)
    mapping = IsotonicMap.fit(predicted, true)
    reference = IsotonicRegression(out_of_bounds="clip").fit(predicted, true)
    grid = np.linspace(-0.1, 1.1, 500)
    np.testing.assert_allclose(mapping(grid), reference.predict(grid), atol=1e-12)
    assert np.all(np.diff(mapping(grid)) >= 0)
    assert mapping.knots_x.size < np.unique(predicted).size  # only the bends are stored
    restored = IsotonicMap.from_dict(mapping.to_dict())
    np.testing.assert_array_equal(restored(grid), mapping(grid))


def test_recalibration_removes_a_bias():
    rng = np.random.default_rng(6)
    predicted, true = synthetic_predictions(rng, 2000)
    mapping = IsotonicMap.fit(predicted, true)
    test_predicted, test_true = synthetic_predictions(rng, 2000)
    assert np.mean(test_predicted - test_true) < -0.04
    assert abs(np.mean(mapping(test_predicted) - test_true)) < 0.01


def test_cross_fitting_keeps_subjects_together_and_uses_only_other_groups():
    subjects = np.array(["a", "a", "b", "c", "c", "d", "e", "f"])
    groups = subject_groups(subjects, num_groups=3)
    assert groups[0] == groups[1] and groups[3] == groups[4] and len(set(groups)) == 3
    predicted = np.linspace(0, 1, 8)
    true = np.where(groups == 0, 1.0, 0.0)
    # group 0's true values are 1, every other group's 0: a map fitted without group 0 predicts 0 there
    recalibrated = cross_fitted(predicted, true, groups)
    np.testing.assert_allclose(recalibrated[groups == 0], 0.0)


# ---- calibration file -----------------------------------------------------------------------------------------
def write_fold(model_folder: str, fold: int, rng: np.random.Generator, n: int = 300) -> str:
    predicted_dsc, dsc = synthetic_predictions(rng, n)
    predicted_nsd, nsd = synthetic_predictions(rng, n)
    table = pd.DataFrame({"sample": [f"f{fold}_s{i}" for i in range(n)],
                          "subject": [f"f{fold}_subject{i // 10}" for i in range(n)],
                          "source": "seggen", "generator": "seggen", "dsc": dsc, "nsd": nsd,
                          "predicted_dsc": predicted_dsc, "predicted_nsd": predicted_nsd})
    path = os.path.join(model_folder, f"fold_{fold}", OUT_OF_FOLD_PREDICTIONS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table.to_csv(path, index=False)
    return path


def test_calibration_file_is_rebuilt_when_a_fold_is_added_or_changes(tmp_path):
    rng = np.random.default_rng(7)
    model = str(tmp_path / "model")
    write_fold(model, 0, rng)
    os.makedirs(os.path.join(model, "fold_all", "validation"))  # trained on everything: no held-out data
    calibration = load_or_build_calibration(model)
    assert calibration["built_from"]["folds"] == [0] and calibration["num_samples"] == 300
    saved = os.path.join(model, CALIBRATION_FILE)
    first_mtime = os.stat(saved).st_mtime_ns
    assert load_or_build_calibration(model) == calibration and os.stat(saved).st_mtime_ns == first_mtime
    write_fold(model, 1, rng)
    calibration = load_or_build_calibration(model)
    assert calibration["built_from"]["folds"] == [0, 1] and calibration["num_samples"] == 600
    assert [s["file"] for s in calibration["built_from"]["sources"]] == [
        f"fold_0/{OUT_OF_FOLD_PREDICTIONS}", f"fold_1/{OUT_OF_FOLD_PREDICTIONS}"]
    old_hash = calibration["built_from"]["sources"][1]["sha256"]
    write_fold(model, 1, rng)  # fold 1 validated again: other predictions
    calibration = load_or_build_calibration(model)
    assert calibration["built_from"]["sources"][1]["sha256"] != old_hash
    # asking for fold 0 only gives a calibration of fold 0 only
    assert load_or_build_calibration(model, folds=[0])["built_from"]["folds"] == [0]
    with pytest.raises(CalibrationError, match="fold_3"):
        build_calibration(model, folds=[0, 3])


def test_calibration_file_follows_the_sources_content_not_their_modification_times(tmp_path):
    model = str(tmp_path / "model")
    path = write_fold(model, 0, np.random.default_rng(10))
    saved = os.path.join(model, CALIBRATION_FILE)
    calibration = load_or_build_calibration(model)
    built = os.stat(saved).st_mtime_ns
    # touched, same bytes: still current, not rebuilt
    os.utime(path, (os.stat(path).st_atime + 100, os.stat(path).st_mtime + 100))
    assert load_or_build_calibration(model) == calibration and os.stat(saved).st_mtime_ns == built
    # other bytes of the same size under the same mtime: rebuilt
    stat = os.stat(path)
    with open(path) as f:
        text = f.read()
    digit = next(i for i, c in enumerate(text) if c == "3" and text[i - 1].isdigit())  # inside a number
    with open(path, "w") as f:
        f.write(text[:digit] + "4" + text[digit + 1:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    rebuilt = load_or_build_calibration(model)
    assert rebuilt["built_from"]["sources"][0]["sha256"] != calibration["built_from"]["sources"][0]["sha256"]
    # another fold's predictions put in place with an older mtime: rebuilt from them
    write_fold(model, 0, np.random.default_rng(11))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - 3600 * 10 ** 9))
    again = load_or_build_calibration(model)
    assert again["built_from"]["sources"][0]["sha256"] not in {
        s["built_from"]["sources"][0]["sha256"] for s in (calibration, rebuilt)}
    assert again == load_or_build_calibration(model)


def test_missing_and_damaged_calibration_data_are_told_apart(tmp_path):
    model = str(tmp_path / "model")
    os.makedirs(os.path.join(model, "fold_0"))
    with pytest.raises(CalibrationDataMissing, match="train a fold first"):
        load_or_build_calibration(model)
    with pytest.raises(CalibrationDataMissing, match=f"fold_0/{OUT_OF_FOLD_PREDICTIONS} does not exist"):
        load_or_build_calibration(model, folds=[0])
    # a damaged calibration.json without the predictions it came from: the damage is what is reported
    saved = os.path.join(model, CALIBRATION_FILE)
    with open(saved, "w") as f:
        f.write('{"format_version": 1, "built_from": ')
    with pytest.raises(CorruptCalibrationData, match=f"{CALIBRATION_FILE}: cannot read it as JSON.*cannot be rebuilt"):
        load_or_build_calibration(model, folds=[0])
    # with the predictions there it is rebuilt from them
    path = write_fold(model, 0, np.random.default_rng(12))
    calibration = load_or_build_calibration(model)
    assert calibration["built_from"]["folds"] == [0] and load_or_build_calibration(model) == calibration
    # a damaged predictions file is not a missing one
    with open(path, "a") as f:
        f.write("f0_extra,subject,seggen,seggen,not a number,0.5,0.5,0.5\n")
    with pytest.raises(CorruptCalibrationData, match="qc_predictions_all.csv: column dsc"):
        load_or_build_calibration(model)


def test_bad_out_of_fold_predictions_are_refused_by_file(tmp_path):
    model = str(tmp_path / "model")
    path = write_fold(model, 0, np.random.default_rng(8), n=50)
    table = pd.read_csv(path)
    table.loc[3, "predicted_dsc"] = np.nan
    table.to_csv(path, index=False)
    with pytest.raises(CalibrationError, match="qc_predictions_all.csv.*predicted_dsc.*f0_s3"):
        build_calibration(model)
    table.drop(columns=["nsd"]).to_csv(path, index=False)
    with pytest.raises(CalibrationError, match="missing column.*nsd"):
        build_calibration(model)
    with pytest.raises(CalibrationError, match="train a fold first"):
        build_calibration(str(tmp_path / "empty"))
    assert not os.path.exists(os.path.join(model, CALIBRATION_FILE))


def test_calibration_intervals_cover_new_cases(tmp_path):
    """End to end on synthetic folds: recalibrated, cross-fitted, Mondrian intervals cover fresh cases."""
    rng = np.random.default_rng(9)
    model = str(tmp_path / "model")
    for fold in range(3):
        write_fold(model, fold, rng)
    calibration = Calibration(load_or_build_calibration(model))
    assert calibration.folds == [0, 1, 2] and calibration.bins.num_bins == 10
    predicted, true = synthetic_predictions(rng, 5000)
    for alpha in (0.1, 0.2):
        result = calibration.intervals("dsc", predicted, alpha=alpha)
        coverage = np.mean((result.lower <= true) & (true <= result.upper))
        # one calibration set of 900: its coverage varies by about sqrt(α(1 - α) / 900) <= 0.014
        assert 1 - alpha - 0.04 <= coverage <= 1 - alpha + 0.05, (alpha, coverage)
    recalibrated = calibration.point("dsc", predicted)
    assert abs(np.mean(recalibrated - true)) < 0.01 < abs(np.mean(predicted - true))
    raw = Calibration(calibration.data, recalibrate=False)
    np.testing.assert_array_equal(raw.point("dsc", predicted), predicted)
    assert calibration.shortfall(0.1) == [] and len(calibration.shortfall(0.01)) == 10


# ---- decisions ------------------------------------------------------------------------------------------------
def test_decisions_follow_the_interval():
    assert decide(0.2, 0.69, 0.7) == FAIL
    assert decide(0.7, 0.9, 0.7) == PASS
    assert decide(0.71, 1.0, 0.7) == PASS
    assert decide(0.6, 0.8, 0.7) == REVIEW
    assert decide(0.6, 0.7, 0.7) == REVIEW  # the upper bound reaches the threshold: it may not be a failure
    assert decide(0.8, 0.9, 0.7, out_of_range_reasons=["spacing: ..."]) == REVIEW
    assert decide(0.0, 1.0, 0.7, finite=False) == REVIEW
    assert decide(float("nan"), float("nan"), 0.7) == REVIEW
    decisions = decide_all([0.1, 0.75, 0.5], [0.3, 0.95, 0.9], 0.7)
    assert decisions == [FAIL, PASS, REVIEW]
    assert decision_counts(decisions) == {PASS: 1, REVIEW: 1, FAIL: 1}


# ---- training range -------------------------------------------------------------------------------------------
def subject_images(rng: np.random.Generator, brightness: float = 1.0, background: float = 0.0) -> np.ndarray:
    """Two channels of a skull-stripped-like subject: N(100, 10) and N(500, 50) in a box, zero (or `background`)
    around it."""
    images = np.full((2, 14, 16, 18), background)
    images[0, 3:11, 3:13, 3:15] = rng.normal(100, 10, (8, 10, 12))
    images[1, 3:11, 3:13, 3:15] = rng.normal(500, 50, (8, 10, 12)) * brightness
    return images


def training_reference(rng: np.random.Generator) -> tuple[dict, dict, TrainingCoverage]:
    """Plans, fingerprint and coverage of 20 training subjects whose brightness varies by +-10 %."""
    subjects = [image_intensity_statistics(subject_images(rng, brightness)) for brightness in np.linspace(0.9, 1.1, 20)]
    fingerprint = {"spacings": [[1.0, 0.9 + 0.01 * i, 1.0] for i in range(20)]}
    plans = {"configurations": {"3d_fullres": {"patch_size": [32, 32, 32]}}}
    return plans, fingerprint, TrainingCoverage(labels={1, 2}, intensities=training_intensity_range(subjects))


def case_segmentation(labels=(1, 2)) -> np.ndarray:
    segmentation = np.zeros((1, 14, 16, 18), dtype=np.uint8)
    segmentation[0, 4:8, 4:10, 5:11] = labels[0]
    segmentation[0, 8:10, 4:10, 5:11] = labels[1]
    return segmentation


def statistics_of(images, segmentation, spacing=(1.0, 1.0, 1.0), shape=(30, 32, 28)) -> CaseStatistics:
    return case_statistics(segmentation, {"spacing": list(spacing), IMAGE_INTENSITIES_PROPERTY:
                                          image_intensity_statistics(images)}, shape)


def test_image_intensity_statistics_are_those_of_the_non_zero_region():
    rng = np.random.default_rng(9)
    images = subject_images(rng)
    images[0, 5, 5, 5] = 0.0  # a zero inside: still in the region, because the other channel is non-zero there
    statistics = image_intensity_statistics(images)
    region = np.any(images != 0, axis=0)
    for channel, s in zip(images, statistics):
        assert s["median"] == pytest.approx(np.median(channel[region]))
        assert s["percentile_00_5"] == pytest.approx(np.percentile(channel[region], 0.5))
    assert image_intensity_statistics(np.zeros((2, 4, 4, 4))) == [None, None]
    per_subject = [statistics, image_intensity_statistics(images * 2)]
    summary = training_intensity_range(per_subject)
    assert summary["1"]["median_min"] == pytest.approx(statistics[1]["median"])
    assert summary["1"]["median_max"] == pytest.approx(2 * statistics[1]["median"])
    spans = [s[1]["percentile_99_5"] - s[1]["percentile_00_5"] for s in per_subject]
    assert summary["1"]["typical_span"] == pytest.approx(np.median(spans)) and summary["1"]["num_subjects"] == 2


def test_large_images_are_judged_on_a_regular_subsample(monkeypatch):
    import nnqc.preprocessing.intensity_statistics as intensity_statistics
    monkeypatch.setattr(intensity_statistics, "MAX_INTENSITY_VOXELS", 100)
    images = np.arange(1, 1001, dtype=np.float64).reshape(1, 10, 10, 10)
    assert image_intensity_statistics(images)[0]["median"] == pytest.approx(np.median(np.arange(1, 1001, 10)))


def test_training_like_case_is_in_range_and_each_reason_fires_on_its_case():
    rng = np.random.default_rng(10)
    plans, fingerprint, coverage = training_reference(rng)
    names = ["T1", "T2"]
    images, segmentation = subject_images(rng), case_segmentation()
    check = out_of_training_range(statistics_of(images, segmentation), plans, fingerprint, coverage,
                                  channel_names=names)
    assert check.in_range and check.not_checked == []

    reasons = out_of_training_range(statistics_of(images, segmentation, spacing=(1.0, 1.0, 3.0)), plans,
                                    fingerprint, coverage).reasons
    assert [r.name for r in reasons] == ["spacing"] and "axis 2" in reasons[0].detail

    reasons = out_of_training_range(statistics_of(images, segmentation, shape=(30, 40, 28)), plans, fingerprint,
                                    coverage).reasons
    assert [r.name for r in reasons] == ["cropped_size"] and "axis 1: 40 > 32" in reasons[0].detail

    bright = statistics_of(subject_images(rng, brightness=1.5), segmentation)
    reasons = out_of_training_range(bright, plans, fingerprint, coverage, channel_names=names).reasons
    assert [r.name for r in reasons] == ["intensity"] and "channel T2" in reasons[0].detail

    # a whole-head-like image (noise around the brain): the non-zero region's median falls out of range
    head = statistics_of(subject_images(rng, background=5.0), segmentation)
    reasons = out_of_training_range(head, plans, fingerprint, coverage, channel_names=names).reasons
    assert [r.detail.split(":")[0] for r in reasons] == ["channel T1", "channel T2"]

    # a segmentation that strays onto the background or other tissue says nothing about the image
    stray = case_segmentation()
    stray[0, 0] = 1
    assert out_of_training_range(statistics_of(images, stray), plans, fingerprint, coverage).in_range

    check = out_of_training_range(statistics_of(images, case_segmentation(labels=(1, 3))), plans, fingerprint,
                                  coverage)
    assert [r.name for r in check.reasons] == ["labels"] and "3" in check.reasons[0].detail
    assert check.to_dict()["out_of_training_range"][0].startswith("labels: label(s) 3")


def test_a_tolerance_of_a_tenth_of_the_typical_span_around_the_training_medians():
    coverage = TrainingCoverage(labels={1}, intensities={"0": {"median_min": 100.0, "median_max": 200.0,
                                                               "typical_span": 50.0, "num_subjects": 3}})
    plans = {"configurations": {"3d_fullres": {"patch_size": [8, 8, 8]}}}
    for median, inside in ((94.9, False), (95.1, True), (204.9, True), (205.1, False)):
        case = CaseStatistics([1.0] * 3, (8, 8, 8), [{"percentile_00_5": 0.0, "median": median,
                                                      "percentile_99_5": 300.0}], {1})
        assert out_of_training_range(case, plans, {"spacings": [[1.0] * 3]}, coverage).in_range == inside


def test_checks_that_cannot_be_made_are_listed_not_passed():
    rng = np.random.default_rng(11)
    plans, fingerprint, coverage = training_reference(rng)
    blank = statistics_of(np.zeros((2, 14, 16, 18)), np.zeros((1, 14, 16, 18), dtype=np.uint8))
    check = out_of_training_range(blank, plans, fingerprint, coverage)
    assert check.in_range and len(check.not_checked) == 2
    assert all("no non-zero voxel" in line for line in check.not_checked)
    unknown = TrainingCoverage(labels_unknown="fold_0: old", intensities_unknown="fold_1: older")
    check = out_of_training_range(statistics_of(subject_images(rng), case_segmentation()), plans, {}, unknown)
    assert check.in_range and len(check.not_checked) == 3
    assert "spacing" in check.not_checked[0] and "(fold_1: older)" in check.not_checked[1]
    assert check.not_checked[2].startswith("labels") and check.not_checked[2].endswith("(fold_0: old)")


def test_calibrated_quality_columns_follow_intervals_and_range_checks(tmp_path):
    rng = np.random.default_rng(12)
    model = str(tmp_path / "model")
    for fold in range(2):
        write_fold(model, fold, rng)
    calibration = Calibration(load_or_build_calibration(model))
    predicted_dsc = np.array([0.05, 0.5, 0.9, 0.97, np.nan, 0.95])
    predicted_nsd = np.array([0.1, 0.4, 0.8, 0.95, np.nan, 0.9])
    outside = out_of_training_range(CaseStatistics([1.0, 1.0, 9.0], (8, 8, 8), [None], set()),
                                    {"configurations": {"3d_fullres": {"patch_size": [8, 8, 8]}}},
                                    {"spacings": [[1.0, 1.0, 1.0]]},
                                    TrainingCoverage(labels=set(), intensities={"0": {}}))
    checks = [None, None, None, None, None, outside]
    table = calibrated_quality(calibration, predicted_dsc, predicted_nsd, alpha=0.1, flag_below=0.7,
                               range_checks=checks)
    assert list(table.columns) == list(CALIBRATED_COLUMNS) and len(table) == 6
    expected = calibration.intervals("dsc", predicted_dsc[:4], alpha=0.1)
    np.testing.assert_allclose(table["dsc_lower"][:4], expected.lower)
    np.testing.assert_allclose(table["dsc_upper"][:4], expected.upper)
    nsd = calibration.intervals("nsd", predicted_dsc[:4], predicted_nsd[:4], alpha=0.1)
    np.testing.assert_allclose(table["nsd_lower"][:4], nsd.lower)
    for row in table.itertuples():
        if row.Index < 4:
            assert row.decision == decide(row.dsc_lower, row.dsc_upper, 0.7)
    assert table["decision"][0] == FAIL and table["decision"][3] == PASS
    assert table["decision"][4] == REVIEW and np.isnan(table["dsc_lower"][4])  # no prediction
    assert table["decision"][5] == REVIEW and table["out_of_training_range"][5].startswith("spacing")
    assert "intensity" in table["not_checked"][5]
