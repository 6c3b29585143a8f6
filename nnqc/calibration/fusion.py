"""Fusing nnQC's predicted DSC with the segmenter's ensemble agreement into one confidence.

The two signals fail differently: nnQC judges the segmentation against the images, the agreement measures how
unsure the segmenter was. The fused DSC is a least-squares linear model of the true DSC on nnQC's predicted
DSC, the members' mean pairwise DSC and the assessed segmentation's mean DSC to the members, clipped to [0, 1];
its intervals are split-conformal (Mondrian over the fused value) on cross-fitted residuals. It is fitted on
cases with references that are never the cases it judges: `nnQC_evaluate` fits it on a labelled set (cross-fitted
over subject groups for the figures it prints) and writes qc_fusion.json; `nnQC_predict --fusion` applies it.
A JSON file of numbers: loading it runs nothing.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nnqc.calibration.conformal import DEFAULT_ALPHA, Intervals, MondrianBins, MondrianConformal
from nnqc.calibration.recalibration import subject_groups

FEATURES = ("predicted_dsc", "ensemble_agreement", "dsc_to_members")
FUSION_FILE = "qc_fusion.json"
MIN_CASES = 20


def _design(table: pd.DataFrame) -> np.ndarray:
    missing = [f for f in FEATURES if f not in table.columns]
    if missing:
        raise ValueError(f"fusion needs the columns {', '.join(FEATURES)}; missing {', '.join(missing)} (run "
                         f"nnQC_predict with --ensemble_members)")
    return np.column_stack([np.ones(len(table)), table[list(FEATURES)].to_numpy(dtype=np.float64)])


def _least_squares(table: pd.DataFrame, true: np.ndarray) -> np.ndarray:
    coefficients, *_ = np.linalg.lstsq(_design(table), true, rcond=None)
    return coefficients


@dataclass
class Fusion:
    """Intercept and one weight per feature (FEATURES order), and the conformal calibration of the fused DSC."""
    coefficients: np.ndarray
    conformal: MondrianConformal
    num_cases: int

    @classmethod
    def fit(cls, table: pd.DataFrame, true_dsc: Sequence[float], subjects: Sequence[str] | None = None) -> Fusion:
        """Fit on labelled cases; the conformal scores are the residuals of cross-fitted values (each case's
        fused DSC from a model fitted without its subject group), as large as a new case's would be."""
        true = np.asarray(true_dsc, dtype=np.float64)
        if len(table) < MIN_CASES:
            raise ValueError(f"fusing needs at least {MIN_CASES} labelled cases with ensemble members, got "
                             f"{len(table)}")
        fused = cross_fitted_fusion(table, true, subjects)
        return cls(_least_squares(table, true),
                   MondrianConformal.fit(fused, true, fused), int(len(table)))

    def fuse(self, table: pd.DataFrame) -> np.ndarray:
        return np.clip(_design(table) @ self.coefficients, 0, 1)

    def intervals(self, table: pd.DataFrame, alpha: float = DEFAULT_ALPHA) -> Intervals:
        fused = self.fuse(table)
        return self.conformal.intervals(fused, fused, alpha)

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "intercept": float(self.coefficients[0]),
                "weights": {f: float(w) for f, w in zip(FEATURES, self.coefficients[1:])},
                "bin_edges": list(self.conformal.bins.edges),
                "scores_per_bin": [s.tolist() for s in self.conformal.scores_per_bin], "num_cases": self.num_cases,
                "definition": "fused DSC = clip(intercept + sum(weight * feature), 0, 1), least squares on "
                              "labelled cases; intervals: Mondrian split conformal on cross-fitted residuals"}

    @classmethod
    def from_dict(cls, data: dict, where: str = "fusion") -> Fusion:
        try:
            if list(data["features"]) != list(FEATURES):
                raise ValueError(f"features {data['features']}, expected {list(FEATURES)}")
            coefficients = np.array([data["intercept"], *[data["weights"][f] for f in FEATURES]], dtype=np.float64)
            bins = MondrianBins(tuple(float(e) for e in data["bin_edges"]))
            conformal = MondrianConformal(bins, [np.asarray(s, dtype=np.float64) for s in data["scores_per_bin"]])
            if not np.all(np.isfinite(coefficients)):
                raise ValueError("non-finite coefficients")
            return cls(coefficients, conformal, int(data["num_cases"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where} is not an nnQC fusion file: {e}") from None

    def save(self, path: str) -> None:
        from nnqc.atomic_files import write_json_atomically

        write_json_atomically(path, self.to_dict())

    @classmethod
    def load(cls, path: str) -> Fusion:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read the fusion file ({e})") from None
        return cls.from_dict(data, path)


def cross_fitted_fusion(table: pd.DataFrame, true_dsc: Sequence[float],
                        subjects: Sequence[str] | None = None) -> np.ndarray:
    """Each case's fused DSC from a model fitted on the other subject groups only (cases are their own subjects
    when none are given): out-of-fold values for figures and conformal scores."""
    true = np.asarray(true_dsc, dtype=np.float64)
    groups = subject_groups(table.index.astype(str) if subjects is None else subjects)
    design = _design(table)
    fused = np.empty(len(table))
    for group in np.unique(groups):
        held_out = groups == group
        if held_out.all():
            coefficients = _least_squares(table, true)
        else:
            coefficients = _least_squares(table[~held_out], true[~held_out])
        fused[held_out] = design[held_out] @ coefficients
    return np.clip(fused, 0, 1)
