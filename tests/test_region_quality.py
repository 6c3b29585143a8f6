"""Quality per region without a trained model: per-region calibration and its coverage on synthetic residuals,
per-region decisions and the worst region, the worst slices, and the per-region evaluation figures."""
import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from nnqc.calibration.calibration_file import (
    CALIBRATION_FILE,
    OUT_OF_FOLD_PREDICTIONS,
    Calibration,
    calibration_from_table,
    load_or_build_calibration,
)
from nnqc.calibration.decision import FAIL, PASS, REVIEW
from nnqc.calibration.region_quality import region_case_columns, region_columns, worst_region
from nnqc.calibration.training_range import RangeCheck, Reason
from nnqc.evaluation.region_evaluation import region_figures
from nnqc.inference.worst_slices import slice_axis, worst_slices
from nnqc.metrics.sem import encode_sem_bits

REGIONS = ("WT", "ET")


def synthetic_region_table(rng: np.random.Generator, n: int, subjects_per_sample: int = 5) -> pd.DataFrame:
    """Out-of-fold predictions with per-region columns: WT predicted well (noise 0.03), ET noisy (0.12) and biased
    (-0.05), so each region needs its own intervals."""
    columns = {"sample": [f"s{i}" for i in range(n)], "subject": [f"subject{i // subjects_per_sample}" for i in
                                                                  range(n)]}
    for suffix, noise, bias in (("", 0.05, 0.0), ("_WT", 0.03, 0.0), ("_ET", 0.12, -0.05)):
        for metric in ("dsc", "nsd"):
            true = rng.beta(4, 1.5, n)
            columns[f"{metric}{suffix}"] = true
            columns[f"predicted_{metric}{suffix}"] = np.clip(true + bias + rng.normal(0, noise, n), 0, 1)
    return pd.DataFrame(columns)


def binomial_99(successes: int, trials: int, low_p: float, high_p: float) -> bool:
    return binom.ppf(0.005, trials, low_p) <= successes <= binom.ppf(0.995, trials, min(high_p, 1.0))


def test_per_region_intervals_cover_within_the_binomial_bounds():
    """Each trial: a fresh calibration set of 200 samples (5 equal-count bins of 40 per region) and one fresh case,
    judged at α 0.1 and 0.2 (one calibration serves both: fitting is most of a trial's time). Without
    recalibration the split-conformal guarantee is exact: at each α the covered count is binomial with p in
    [1 - α, 1 - α + 1/41], for each region and metric. With recalibration (cross-fitted), within the same bounds
    widened by 0.02."""
    rng = np.random.default_rng(11)
    trials, alphas = 1500, (0.1, 0.2)
    covered = {(a, r, m, recal): 0 for a in alphas for r in REGIONS for m in ("dsc", "nsd") for recal in (False, True)}
    widths = {(a, r): [] for a in alphas for r in REGIONS}
    for _ in range(trials):
        table = synthetic_region_table(rng, 201)
        data = calibration_from_table(table.iloc[:200])
        assert list(data["regions"]) == list(REGIONS)
        case = table.iloc[200]
        for recal in (False, True):
            calibration = Calibration({**data, "built_from": {"folds": [0]}}, recalibrate=recal)
            for r in REGIONS:
                region = calibration.regions[r]
                assert region.bins.num_bins == 5
                for a in alphas:
                    dsc = region.intervals("dsc", [case[f"predicted_dsc_{r}"]], alpha=a)
                    nsd = region.intervals("nsd", [case[f"predicted_dsc_{r}"]], [case[f"predicted_nsd_{r}"]], alpha=a)
                    covered[(a, r, "dsc", recal)] += int(dsc.lower[0] <= case[f"dsc_{r}"] <= dsc.upper[0])
                    covered[(a, r, "nsd", recal)] += int(nsd.lower[0] <= case[f"nsd_{r}"] <= nsd.upper[0])
                    if not recal:
                        widths[(a, r)].append(dsc.upper[0] - dsc.lower[0])
    for (a, r, m, recal), count in covered.items():
        slack = 0.02 if recal else 0.0
        assert binomial_99(count, trials, 1 - a - slack, 1 - a + 1 / 41 + slack), (a, r, m, recal, count)
    for a in alphas:  # each region's own residuals: the noisy region gets the wider intervals
        assert np.median(widths[(a, "ET")]) > 2 * np.median(widths[(a, "WT")])


def write_region_fold(model: str, fold: int, rng: np.random.Generator, n: int = 200, with_regions: bool = True):
    table = synthetic_region_table(rng, n)
    table["sample"] = [f"f{fold}_{s}" for s in table["sample"]]
    table["subject"] = [f"f{fold}_{s}" for s in table["subject"]]
    if not with_regions:
        table = table[[c for c in table.columns if not c.endswith(REGIONS)]]
    path = os.path.join(model, f"fold_{fold}", OUT_OF_FOLD_PREDICTIONS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table.to_csv(path, index=False)


def test_calibration_file_holds_the_regions_and_older_files_still_load(tmp_path):
    rng = np.random.default_rng(3)
    model = str(tmp_path / "model")
    for fold in (0, 1):
        write_region_fold(model, fold, rng)
    data = load_or_build_calibration(model)
    assert data["format_version"] == 2 and list(data["regions"]) == list(REGIONS)
    assert data["regions"]["ET"]["conformal"]["bin_variable"] == "predicted_dsc_ET"
    assert data["regions"]["ET"]["out_of_fold_summary"]["dsc"]["mae_raw"] > data["regions"]["WT"][
        "out_of_fold_summary"]["dsc"]["mae_raw"]
    # a version-1 file (before per-region calibration) shipped without its sources: read, with no regions
    shipped = str(tmp_path / "shipped")
    os.makedirs(shipped)
    old = {k: v for k, v in data.items() if k != "regions"}
    old["format_version"] = 1
    with open(os.path.join(shipped, CALIBRATION_FILE), "w") as f:
        json.dump(old, f)
    from nnqc.calibration.calibration_file import read_calibration_file

    assert Calibration(read_calibration_file(os.path.join(shipped, CALIBRATION_FILE))).regions == {}
    # out-of-fold predictions of a model without per-region outputs: no region calibrated
    plain = str(tmp_path / "plain")
    write_region_fold(plain, 0, rng, with_regions=False)
    assert load_or_build_calibration(plain)["regions"] == {}


def region_calibration(rng) -> Calibration:
    table = synthetic_region_table(rng, 400)
    for r in REGIONS:  # tiny residuals: intervals of about ± 0.01
        for m in ("dsc", "nsd"):
            table[f"predicted_{m}_{r}"] = np.clip(table[f"{m}_{r}"] + rng.normal(0, 0.003, len(table)), 0, 1)
    return Calibration({**calibration_from_table(table), "built_from": {"folds": [0]}})


def test_each_region_gets_its_decision_and_the_worst_region_is_named():
    calibration = region_calibration(np.random.default_rng(4))
    in_range = RangeCheck()
    row = region_case_columns(calibration, REGIONS, [0.93, 0.40], [0.9, 0.5], in_range, False, 0.1, 0.7)
    assert set(region_columns(REGIONS)) <= set(row) and row["per_region_outputs"] is True
    assert row["decision_WT"] == PASS and row["decision_ET"] == FAIL
    assert row["dsc_lower_ET"] <= row["calibrated_dsc_ET"] <= row["dsc_upper_ET"] < 0.7
    assert (row["worst_region"], row["worst_region_decision"]) == ("ET", FAIL)
    assert row["worst_region_dsc"] == row["calibrated_dsc_ET"]
    # straddling the threshold: review; out of the training range or a partial view: review, never pass
    row = region_case_columns(calibration, REGIONS, [0.93, 0.70], [0.9, 0.7], in_range, False, 0.1, 0.7)
    assert row["decision_ET"] == REVIEW and row["worst_region"] == "ET"
    out = RangeCheck([Reason("spacing", "far off")])
    row = region_case_columns(calibration, REGIONS, [0.93, 0.95], [0.9, 0.9], out, False, 0.1, 0.7)
    assert row["decision_WT"] == row["decision_ET"] == REVIEW
    row = region_case_columns(calibration, REGIONS, [0.93, 0.30], [0.9, 0.3], in_range, True, 0.1, 0.7)
    assert row["decision_WT"] == REVIEW and row["decision_ET"] == FAIL  # a fail stays a fail
    # a model without per-region outputs: every region column empty, and it says so
    row = region_case_columns(calibration, REGIONS, None, None, in_range, False, 0.1, 0.7)
    assert row["per_region_outputs"] is False and row["worst_region"] == ""
    assert all(row[c] is None for c in region_columns(REGIONS) if not c.startswith("decision_"))
    # without a calibration: predictions only, the worst region by predicted DSC, no decisions
    row = region_case_columns(None, REGIONS, [0.5, 0.8], [0.5, 0.8], in_range, False, 0.1, 0.7)
    assert row["decision_WT"] == "" and row["calibrated_dsc_WT"] is None
    assert (row["worst_region"], row["worst_region_dsc"]) == ("WT", 0.5)


def test_worst_region_prefers_the_severest_decision_then_the_lowest_dsc():
    assert worst_region(["a", "b", "c"], [0.2, 0.6, 0.5], [REVIEW, FAIL, FAIL]) == ("c", 0.5, FAIL)
    assert worst_region(["a", "b"], [0.9, 0.8], [PASS, PASS]) == ("b", 0.8, PASS)
    assert worst_region(["a", "b"], [None, 0.8], ["", ""]) == ("b", 0.8, "")
    assert worst_region([], [], []) == ("", None, "")


def test_slice_axis_is_that_of_the_lowest_resolution_axial_when_isotropic():
    assert slice_axis((1.0, 1.0, 1.0)) == 0
    assert slice_axis((0.8, 0.8, 3.0)) == 2
    assert slice_axis((1.0, 5.0, 5.0)) == 1  # a tie between coarse axes goes to the lower one


def test_worst_slices_are_where_the_errors_are():
    rng = np.random.default_rng(0)
    sem = np.zeros((2, 12, 10, 8), dtype=bool)
    sem[0, 3, :4] = True          # region 0: 32 voxels in slice 3 of axis 0
    sem[0, 7, :2] = True          # 16 in slice 7
    sem[0, 9, 0, :3] = True       # 3 in slice 9
    sem[0, 10, 0, :3] = True      # 3 in slice 10 (tie with 9: the lower slice first)
    sem[0, 1, 0, 0] = True        # 1 in slice 1
    bits = encode_sem_bits(sem)
    result = worst_slices(bits, ["a", "b"], (1.0, 1.0, 1.0), k=4)
    assert result["axis"] == 0
    assert result["regions"]["a"] == [{"slice": 3, "error_voxels": 32}, {"slice": 7, "error_voxels": 16},
                                      {"slice": 9, "error_voxels": 3}, {"slice": 10, "error_voxels": 3}]
    assert result["regions"]["b"] == []  # no error, no slice to look at
    # anisotropic: slices across the coarse axis (axis 2 here), counted per slice of that axis
    sem = rng.random((1, 6, 7, 5)) < 0.2
    result = worst_slices(encode_sem_bits(sem), ["a"], (1.0, 1.0, 4.0), k=2)
    counts = sem[0].sum(axis=(0, 1))
    assert result["axis"] == 2
    assert [s["error_voxels"] for s in result["regions"]["a"]] == sorted(counts, reverse=True)[:2]
    assert [counts[s["slice"]] for s in result["regions"]["a"]] == sorted(counts, reverse=True)[:2]
    with pytest.raises(ValueError, match="at least 1"):
        worst_slices(bits, ["a", "b"], (1.0, 1.0, 1.0), k=0)


def test_region_evaluation_figures():
    rng = np.random.default_rng(2)
    n = 60
    true = rng.uniform(0, 1, n)
    table = pd.DataFrame({"true_dsc_ET": true, "true_nsd_ET": true, "predicted_dsc_ET": true,
                          "predicted_nsd_ET": np.clip(true + 0.1, 0, 1), "dsc_lower_ET": true - 0.05,
                          "dsc_upper_ET": np.where(np.arange(n) < 45, true + 0.05, true - 0.01),
                          "nsd_lower_ET": true, "nsd_upper_ET": true + 0.2,
                          "true_dsc_WT": true, "true_nsd_WT": true})
    figures = region_figures(table, ["ET", "WT"], 0.7)
    assert list(figures) == ["ET"]  # WT has no predictions
    et = figures["ET"]
    assert et["dsc"]["r"] == pytest.approx(1.0) and et["dsc"]["mae"] == pytest.approx(0.0)
    assert et["nsd"]["mae"] == pytest.approx(np.mean(np.clip(true + 0.1, 0, 1) - true))
    assert et["failure_detection"]["aurc"] == pytest.approx(et["failure_detection"]["optimal_aurc"])
    assert et["intervals"]["dsc"]["coverage"] == pytest.approx(45 / 60)
    assert et["intervals"]["nsd"]["coverage"] == pytest.approx(1.0)
    assert region_figures(table.drop(columns=[c for c in table if c.startswith("predicted")]), ["ET"], 0.7) == {}
