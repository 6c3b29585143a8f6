"""nnQC_evaluate per region: each region's predicted DSC and NSD against the truth, beside the subject level.

A subject-level r can be high while a small region's predictions are poor; these figures say how far each
region's numbers, intervals and decisions can be trusted: Pearson r and MAE of DSC and NSD, the failure-detection
figures of the region's predicted DSC (risk = 1 - the region's true DSC), and the coverage of its intervals.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from nnqc.evaluation.failure_detection import failure_detection_summary, interval_summary
from nnqc.evaluation.qc_metrics import regression_summary

REGION_TRUE = ("true_dsc", "true_nsd")
REGION_PREDICTED = ("predicted_dsc", "predicted_nsd", "dsc_lower", "dsc_upper", "nsd_lower", "nsd_upper",
                    "decision")


def region_case_values(true: dict, predicted: pd.Series, region_names: Sequence[str]) -> dict:
    """The per-region columns of one case in qc_evaluation.csv: true DSC and NSD (from evaluate_case's
    dsc_per_region, nsd_per_region), the predictions, intervals and decision of the summary (where it has them)."""
    row = {}
    for i, name in enumerate(region_names):
        row[f"true_dsc_{name}"] = float(true["dsc_per_region"][i])
        row[f"true_nsd_{name}"] = float(true["nsd_per_region"][i])
        for quantity in REGION_PREDICTED:
            column = f"{quantity}_{name}"
            if column in predicted.index:
                row[column] = predicted[column]
    return row


def region_evaluation_columns(region_names: Sequence[str], summary_columns: Sequence[str]) -> list[str]:
    """qc_evaluation.csv's per-region columns, region by region; predictions only where the summary has them."""
    columns = []
    for name in region_names:
        columns += [f"{q}_{name}" for q in REGION_TRUE]
        columns += [f"{q}_{name}" for q in REGION_PREDICTED if f"{q}_{name}" in summary_columns]
    return columns


def _numbers(table: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)


def region_figures(included: pd.DataFrame, region_names: Sequence[str], threshold: float | None) -> dict:
    """Per region: {"dsc", "nsd": r and MAE; "failure_detection": of the region's predicted DSC (None without a
    threshold); "intervals": coverage and width of its DSC and NSD intervals (None without them)}, over the cases
    with the region's predictions. {} when the predictions have no per-region values (a model trained before)."""
    figures = {}
    for name in region_names:
        if f"predicted_dsc_{name}" not in included:
            continue
        true_dsc, predicted_dsc = _numbers(included, f"true_dsc_{name}"), _numbers(included, f"predicted_dsc_{name}")
        true_nsd, predicted_nsd = _numbers(included, f"true_nsd_{name}"), _numbers(included, f"predicted_nsd_{name}")
        valid = np.isfinite(predicted_dsc) & np.isfinite(predicted_nsd)
        if not valid.any():
            continue
        entry = {"dsc": regression_summary(true_dsc[valid], predicted_dsc[valid]),
                 "nsd": regression_summary(true_nsd[valid], predicted_nsd[valid]),
                 "failure_detection": (failure_detection_summary(true_dsc[valid], predicted_dsc[valid], threshold)
                                       if threshold is not None else None),
                 "intervals": None}
        bounds = [f"{m}_{side}_{name}" for m in ("dsc", "nsd") for side in ("lower", "upper")]
        if all(c in included for c in bounds):
            lo_d, hi_d, lo_n, hi_n = (_numbers(included, c) for c in bounds)
            calibrated = valid & np.isfinite(lo_d) & np.isfinite(hi_d) & np.isfinite(lo_n) & np.isfinite(hi_n)
            if calibrated.any():
                entry["intervals"] = {
                    "dsc": interval_summary(true_dsc[calibrated], lo_d[calibrated], hi_d[calibrated]),
                    "nsd": interval_summary(true_nsd[calibrated], lo_n[calibrated], hi_n[calibrated],
                                            true_dsc=true_dsc[calibrated])}
        figures[name] = entry
    return figures


def region_lines(result: dict) -> list[str]:
    """The per-region figures as plain-text lines for nnQC_evaluate's printout."""
    regions = result.get("regions") or {}
    if not regions:
        return ["per region: no per-region predictions (a model trained before nnQC predicted regions)"]
    width = max(8, *(len(name) + 1 for name in regions))
    header = f"{'DSC r':>8s}{'DSC MAE':>9s}{'NSD r':>8s}{'NSD MAE':>9s}{'AURC':>8s}{'coverage':>10s}"
    lines = [f"{'region':{width}s}{header}"]
    for name, f in regions.items():
        aurc = (f.get("failure_detection") or {}).get("aurc")
        coverage = ((f.get("intervals") or {}).get("dsc") or {}).get("coverage")
        cells = [f["dsc"]["r"], f["dsc"]["mae"], f["nsd"]["r"], f["nsd"]["mae"], aurc, coverage]
        text = ["" if v is None or not np.isfinite(v) else f"{v:.3f}" for v in cells]
        lines.append(f"{name:{width}s}{text[0]:>8s}{text[1]:>9s}{text[2]:>8s}{text[3]:>9s}{text[4]:>8s}{text[5]:>10s}")
    return lines
