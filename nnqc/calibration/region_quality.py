"""Quality per region: each region's predicted DSC and NSD, their calibrated values and intervals, its decision, and
the case's worst region.

A mean over regions hides a failing small structure (BraTS: the enhancing tumour fails while the whole tumour is
fine), so every region gets its own pass / review / fail, made as the case's is (nnqc.calibration.decision): its
DSC interval against the same threshold, `review` out of the training range or when the network saw only part of
the case. The case's own decision stays the subject-level one (the paper's quantity); `worst_region` names the
region a reviewer should look at first.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnqc.calibration.calibration_file import Calibration
from nnqc.calibration.conformal import DEFAULT_ALPHA
from nnqc.calibration.decision import FAIL, PASS, REVIEW, decide
from nnqc.calibration.training_range import RangeCheck

REGION_QUANTITIES = ("predicted_dsc", "predicted_nsd", "calibrated_dsc", "dsc_lower", "dsc_upper", "calibrated_nsd",
                     "nsd_lower", "nsd_upper", "decision")
WORST_REGION_COLUMNS = ("worst_region", "worst_region_dsc", "worst_region_decision")
PER_REGION_OUTPUTS_COLUMN = "per_region_outputs"
NO_PER_REGION_OUTPUTS = ("this model predicts no per-region DSC/NSD (its regression head has the 2 subject-level "
                         "outputs of a model trained before nnQC predicted regions): the per-region columns are empty; "
                         "retrain it for per-region quality")
_SEVERITY = {FAIL: 0, REVIEW: 1, PASS: 2}


def region_columns(region_names: Sequence[str]) -> list[str]:
    """qc_summary columns per region, region by region: predicted_dsc_<region>, ..., decision_<region>."""
    return [f"{quantity}_{name}" for name in region_names for quantity in REGION_QUANTITIES]


def summary_region_columns(region_names: Sequence[str]) -> list[str]:
    """Every per-region column of qc_summary.csv, in order: whether the model has them, the worst region, then
    region_columns."""
    return [PER_REGION_OUTPUTS_COLUMN, *WORST_REGION_COLUMNS, *region_columns(region_names)]


def _value(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def worst_region(region_names: Sequence[str], dsc: Sequence[float | None], decisions: Sequence[str]
                 ) -> tuple[str, float | None, str]:
    """(name, DSC, decision) of the region to look at first: the most severe decision (fail, review, pass, none),
    then the lowest DSC (the calibrated one where there is a calibration), then the first region."""
    if not region_names:
        return "", None, ""

    def key(i: int):
        d = dsc[i]
        return _SEVERITY.get(decisions[i], 3), np.inf if d is None else d, i

    i = min(range(len(region_names)), key=key)
    return region_names[i], dsc[i], decisions[i]


def region_case_columns(calibration: Calibration | None, region_names: Sequence[str],
                        predicted_dsc: Sequence[float] | None, predicted_nsd: Sequence[float] | None,
                        range_check: RangeCheck | None, partial_view: bool, alpha: float = DEFAULT_ALPHA,
                        flag_below: float = 0.7) -> dict:
    """summary_region_columns of one case (JSON-ready) from the ensemble's per-region predictions (None: the model
    has no per-region outputs, every column empty). Without a calibration of a region its calibrated values and
    interval are empty and its decision is ""."""
    row = {c: None for c in region_columns(region_names)}
    row.update({PER_REGION_OUTPUTS_COLUMN: predicted_dsc is not None, "worst_region": "", "worst_region_dsc": None,
                "worst_region_decision": ""})
    if predicted_dsc is None or predicted_nsd is None:
        row.update({f"decision_{name}": "" for name in region_names})
        return row
    reasons = range_check.reasons if range_check is not None else ()
    dsc_for_worst, decisions = [], []
    for name, p_dsc, p_nsd in zip(region_names, predicted_dsc, predicted_nsd):
        row[f"predicted_dsc_{name}"], row[f"predicted_nsd_{name}"] = _value(p_dsc), _value(p_nsd)
        region = calibration.regions.get(name) if calibration is not None else None
        decision = ""
        if region is not None and np.isfinite(p_dsc) and np.isfinite(p_nsd):
            dsc = region.intervals("dsc", [p_dsc], alpha=alpha)
            nsd = region.intervals("nsd", [p_dsc], [p_nsd], alpha=alpha)
            for prefix, result in (("dsc", dsc), ("nsd", nsd)):
                row[f"calibrated_{prefix}_{name}"] = _value(result.point[0])
                row[f"{prefix}_lower_{name}"] = _value(result.lower[0])
                row[f"{prefix}_upper_{name}"] = _value(result.upper[0])
            decision = decide(dsc.lower[0], dsc.upper[0], flag_below, reasons, bool(dsc.finite[0]))
            if partial_view and decision != FAIL:
                decision = REVIEW
        row[f"decision_{name}"] = decision
        decisions.append(decision)
        calibrated = row[f"calibrated_dsc_{name}"]
        dsc_for_worst.append(calibrated if calibrated is not None else row[f"predicted_dsc_{name}"])
    name, dsc, decision = worst_region(list(region_names), dsc_for_worst, decisions)
    row.update({"worst_region": name, "worst_region_dsc": dsc, "worst_region_decision": decision})
    return row
