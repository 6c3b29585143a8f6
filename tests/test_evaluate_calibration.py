"""nnQC_evaluate and the report on calibrated predictions: failure detection, interval coverage, decisions, PNGs."""
import json
import os

import numpy as np
import pandas as pd
from helpers import write_json
from test_evaluate import FLAG_BELOW, case_volumes, make_prediction_output

from nnqc.calibration.decision import decide
from nnqc.evaluation.evaluate import evaluate_predictions
from nnqc.evaluation.report import write_report

# case -> DSC interval; with the true DSCs of test_evaluate (1, 2/3, 0.5, 0.75, 1, 1) the first four cover,
# "swapped" (0.5 outside [0.6, 0.7]) and "perfect3" (1 outside [0.7, 0.95]) do not
DSC_INTERVALS = {"perfect": (0.8, 1.0), "missing_b": (0.5, 0.7), "swapped": (0.6, 0.7), "shifted": (0.7, 0.9),
                 "perfect2": (0.9, 1.0), "perfect3": (0.7, 0.95), "noref": (0.1, 0.4)}


def add_calibration(folders: dict, alpha: float = 0.1) -> pd.DataFrame:
    """The calibrated columns and settings nnQC_predict writes, with hand-chosen intervals."""
    path = os.path.join(folders["out"], "qc_summary.csv")
    table = pd.read_csv(path, dtype={"case": str})
    ok = table["status"] == "ok"
    table.loc[ok, "dsc_lower"] = table.loc[ok, "case"].map(lambda c: DSC_INTERVALS[c][0])
    table.loc[ok, "dsc_upper"] = table.loc[ok, "case"].map(lambda c: DSC_INTERVALS[c][1])
    table.loc[ok, "calibrated_dsc"] = (table["dsc_lower"] + table["dsc_upper"]) / 2
    table.loc[ok, "calibrated_nsd"] = table.loc[ok, "predicted_nsd"]
    table.loc[ok, "nsd_lower"], table.loc[ok, "nsd_upper"] = 0.0, 1.0  # always covers
    table.loc[ok, "interval_finite"] = True
    table.loc[ok, "out_of_training_range"] = ""
    table.loc[table["case"] == "shifted", "out_of_training_range"] = "spacing: spacing 3 mm on axis 0 outside 1-2 mm"
    table["decision"] = ""
    table.loc[ok, "decision"] = [decide(lo, hi, FLAG_BELOW, [r] if r else [])
                                 for lo, hi, r in zip(table.loc[ok, "dsc_lower"], table.loc[ok, "dsc_upper"],
                                                      table.loc[ok, "out_of_training_range"])]
    table.to_csv(path, index=False)
    settings_path = os.path.join(folders["out"], "predict_settings.json")
    with open(settings_path) as f:
        settings = json.load(f)
    settings.update(alpha=alpha, recalibration=True, calibration_warnings=[],
                    calibration={"available": True, "built_from": {"folds": [0, 1], "sources": []},
                                 "num_samples": 400})
    write_json(settings_path, settings)
    return table


def brute_force_aurc(risk, confidence) -> float:
    """Trapezoidal area under selective risk (mean risk of the k most confident) over coverage k/n, no ties."""
    risk = np.asarray(risk)[np.argsort(-np.asarray(confidence))]
    n = risk.size
    selective = [risk[:k].mean() for k in range(n, 0, -1)]
    return float(sum((a + b) / 2 / n for a, b in zip(selective[:-1], selective[1:])))


def test_evaluation_writes_the_calibration_block_and_the_risk_coverage_png(tmp_path):
    folders = make_prediction_output(tmp_path)
    table = add_calibration(folders)
    result = evaluate_predictions(folders["out"], folders["refs"], verbose=False)
    with open(os.path.join(folders["out"], "qc_evaluation.json")) as f:
        assert json.load(f)["calibration"] == result["calibration"]
    truth = {case: v[2] for case, v in case_volumes().items()}
    evaluated = table[table["case"].isin(truth)]
    true_dsc = evaluated["case"].map(truth).to_numpy()
    detection = result["failure_detection"]
    assert detection["n"] == 6
    assert np.isclose(detection["aurc"], brute_force_aurc(1 - true_dsc, evaluated["predicted_dsc"]))
    assert np.isclose(detection["optimal_aurc"], brute_force_aurc(1 - true_dsc, -(1 - true_dsc)))
    assert np.isclose(detection["random_aurc"], np.mean(1 - true_dsc))
    intervals = result["calibration"]["intervals"]
    assert intervals["target_coverage"] == 0.9
    assert np.isclose(intervals["dsc"]["coverage"], 4 / 6)
    widths = [DSC_INTERVALS[c][1] - DSC_INTERVALS[c][0] for c in evaluated["case"]]
    assert np.isclose(intervals["dsc"]["mean_width"], np.mean(widths)) and intervals["nsd"]["coverage"] == 1.0
    counts = result["calibration"]["decisions"]["counts"]
    assert counts == {d: int((evaluated["decision"] == d).sum()) for d in ("pass", "review", "fail")}
    assert counts["review"] >= 1  # "shifted" is outside the training range
    png = os.path.join(folders["out"], "risk_coverage.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    evaluation = pd.read_csv(os.path.join(folders["out"], "qc_evaluation.csv"))
    assert {"calibrated_dsc", "dsc_lower", "dsc_upper", "decision"} <= set(evaluation.columns)

    page = open(write_report(folders["out"], max_previews=0)).read()
    assert "Failure detection and intervals" in page and 'alt="risk-coverage curve"' in page
    assert 'alt="DSC intervals of the cases against the threshold"' in page
    for decision in counts:
        assessed = int((table["decision"] == decision).sum())  # all assessed cases, "noref" too
        assert f">{assessed}</b>{decision}</div>" in page
        assert page.count(f'class="badge {decision}"') == 2 * assessed  # in the table and on the card
    assert "[0.600, 0.700]" in page  # the interval of "swapped" in the table
    assert f"{intervals['dsc']['coverage']:.3f}" in page


def test_without_calibration_the_evaluation_says_so_and_still_ranks(tmp_path):
    folders = make_prediction_output(tmp_path)
    result = evaluate_predictions(folders["out"], folders["refs"], verbose=False)
    assert result["calibration"] is None and "no calibrated intervals" in result["calibration_note"]
    assert result["failure_detection"]["n"] == 6
    assert os.path.isfile(os.path.join(folders["out"], "risk_coverage.png"))
    page = open(write_report(folders["out"], max_previews=0)).read()
    assert "no calibrated intervals" in page and 'class="badge pass"' not in page
