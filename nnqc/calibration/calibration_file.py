"""calibration.json in the model folder: recalibration maps and conformal residuals from out-of-fold predictions.

Every trained fold's final validation writes fold_X/validation/qc_predictions_all.csv: the fold model's
predictions on all of the fold's validation samples in their natural distribution, from a model that never saw
those subjects. Pooled over folds, they are the calibration set (cross-conformal: each residual comes from the
model that held its subject out, and is taken after a recalibration map fitted without its subject group, so
that the map's fit to its own samples does not make the residuals look smaller than a new case's). New cases
are predicted by the ensemble of those models, whose averaged prediction is usually no less accurate than one
fold's, so the pooled residuals tend to err on the wide side.

The file records the folds and each source file's SHA-256, size and modification time; `load_or_build_calibration`
rebuilds it when the folds asked for differ (a fold added) or any source file's content (size, SHA-256) changed (a
fold retrained or validated again), so a calibration built from other folds or files is never used. The recorded
modification time is information only: a file replaced with an older mtime still counts as changed, a touched one
does not.

Missing data (CalibrationDataMissing: a model trained before folds stored their out-of-fold predictions) and
unusable data (CorruptCalibrationData: such a file, or calibration.json, exists but cannot be read or used) are
told apart, so that a caller can go on without calibration in the first case and stop in the second.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, subdirs

from nnqc.atomic_files import file_sha256, write_json_atomically
from nnqc.calibration.conformal import (
    DEFAULT_ALPHA,
    MIN_SAMPLES_PER_BIN,
    Intervals,
    MondrianBins,
    MondrianConformal,
    choose_bins,
    minimum_calibration_samples,
)
from nnqc.calibration.recalibration import IsotonicMap, cross_fitted, identity_map, subject_groups
from nnqc.training.final_validation import MIRRORING_COLUMN

CALIBRATION_FILE = "calibration.json"
OUT_OF_FOLD_PREDICTIONS = "validation/qc_predictions_all.csv"
REQUIRED_COLUMNS = ("sample", "subject", "dsc", "nsd", "predicted_dsc", "predicted_nsd")
METRICS = ("dsc", "nsd")
FORMAT_VERSION = 2  # 2: per-region calibration ("regions"); version 1 files (without it) are still read
READABLE_VERSIONS = (1, 2)
HIGH_QUALITY_DSC = 0.85
_SCORE_DECIMALS = 6


class CalibrationError(ValueError):
    """Calibration data that cannot be used; the message names the file and says why."""


class CalibrationDataMissing(CalibrationError):
    """No out-of-fold predictions for a fold asked for: a model without calibration, not a broken one."""


class CorruptCalibrationData(CalibrationError):
    """An out-of-fold predictions file or calibration.json that exists but cannot be read or used."""


def calibration_folds(model_folder: str) -> list[int]:
    """The cross-validation folds (numbers; never fold_all, which has no held-out data) with out-of-fold
    predictions."""
    folds = [d[5:] for d in subdirs(model_folder, prefix="fold_", join=False)] if os.path.isdir(model_folder) else []
    return sorted(int(f) for f in folds if f.isdigit() and isfile(join(model_folder, f"fold_{f}",
                                                                         OUT_OF_FOLD_PREDICTIONS)))


def _source_record(model_folder: str, fold: int) -> dict:
    path = join(model_folder, f"fold_{fold}", OUT_OF_FOLD_PREDICTIONS)
    if not isfile(path):
        raise CalibrationDataMissing(f"{path} does not exist: run the final validation of fold {fold} "
                                     f"(nnQC_train ... {fold} --val) or calibrate without it")
    try:
        stat = os.stat(path)
        sha256 = file_sha256(path)
    except OSError as e:
        raise CorruptCalibrationData(f"{path}: cannot read it ({type(e).__name__}: {e.strerror or e})") from e
    return {"file": f"fold_{fold}/{OUT_OF_FOLD_PREDICTIONS}", "sha256": sha256, "size": stat.st_size,
            "mtime": stat.st_mtime}


def read_out_of_fold_predictions(path: str) -> pd.DataFrame:
    """One fold's qc_predictions_all.csv, checked: the required columns, finite values in [0, 1], not empty."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as e:  # pandas raises ValueError subclasses on malformed CSV
        reason = " ".join(str(e).split())  # one line: pandas' parser messages end in a newline
        raise CorruptCalibrationData(f"{path}: cannot read it as CSV ({type(e).__name__}: {reason})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CorruptCalibrationData(f"{path}: missing column(s) {', '.join(missing)}")
    if table.empty:
        raise CorruptCalibrationData(f"{path}: holds no samples")
    region_columns = [c for c in table.columns if c.startswith(("dsc_", "nsd_", "predicted_dsc_", "predicted_nsd_"))
                      and not c.startswith("dsc_sem_")]
    for column in ("dsc", "nsd", "predicted_dsc", "predicted_nsd", *region_columns):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < 0) | (values > 1)
        if bad.any():
            raise CorruptCalibrationData(f"{path}: column {column} has {int(bad.sum())} value(s) that are not numbers "
                                   f"in [0, 1] (first in sample {table['sample'].iloc[int(np.argmax(bad))]})")
        table[column] = values
    return table


def _rounded_up(scores: np.ndarray) -> list[float]:
    """Scores rounded up to 1e-6: a smaller file, intervals at most 1e-6 wider, never narrower."""
    scale = 10 ** _SCORE_DECIMALS
    return (np.ceil(np.sort(scores) * scale) / scale).tolist()


def _mean_error_above(true_dsc: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> float | None:
    """Mean signed error (predicted - true) over the samples with true DSC > 0.85 (None when there are none)."""
    high = true_dsc > HIGH_QUALITY_DSC
    return float(np.mean(predicted[high] - true[high])) if high.any() else None


def predictions_mirroring(table: pd.DataFrame) -> str:
    """The test-time mirroring all out-of-fold predictions were made with ("0 1 2", "none"), or "mixed"; files
    written before qc_predictions_all.csv recorded it were made without mirroring."""
    if MIRRORING_COLUMN not in table:
        return "none"
    labels = set(table[MIRRORING_COLUMN].fillna("none").astype(str))
    return labels.pop() if len(labels) == 1 else "mixed"


def build_calibration(model_folder: str, folds: Sequence[int] | None = None,
                      min_samples_per_bin: int = MIN_SAMPLES_PER_BIN) -> dict:
    """The calibration built from the given folds' out-of-fold predictions (default: every fold that has
    them), as the dict calibration.json holds; nothing is written."""
    folds = sorted(int(f) for f in (calibration_folds(model_folder) if folds is None else folds))
    if not folds:
        raise CalibrationDataMissing(f"no fold_X/{OUT_OF_FOLD_PREDICTIONS} in {model_folder}: train a fold first")
    sources = [_source_record(model_folder, f) for f in folds]
    table = pd.concat([read_out_of_fold_predictions(join(model_folder, s["file"])).assign(fold=f)
                       for f, s in zip(folds, sources)], ignore_index=True)
    return {"format_version": FORMAT_VERSION,
            "built_from": {"folds": folds, "sources": sources, "test_time_mirroring": predictions_mirroring(table)},
            **calibration_from_table(table, min_samples_per_bin),
            "samples_per_fold": {str(f): int((table["fold"] == f).sum()) for f in folds}}


def calibration_from_table(table: pd.DataFrame, min_samples_per_bin: int = MIN_SAMPLES_PER_BIN) -> dict:
    """The calibration of pooled out-of-fold predictions (columns as in qc_predictions_all.csv): sample counts,
    subject-level recalibration maps, conformal scores and summary, and the same per calibrated region."""
    groups = subject_groups(table["subject"].astype(str).to_numpy())
    recalibration, conformal, summary = _calibration_block(table, "", groups, min_samples_per_bin)
    regions = {name: dict(zip(("recalibration", "conformal", "out_of_fold_summary"),
                              _calibration_block(table, f"_{name}", groups, min_samples_per_bin)))
               for name in calibrated_regions(table)}
    return {
        "num_samples": len(table), "num_subjects": int(table["subject"].nunique()),
        "recalibration": recalibration,
        "conformal": conformal,
        "out_of_fold_summary": summary,
        # per region, from the same out-of-fold predictions and subject groups, Mondrian per bin of the region's
        # own predicted DSC (empty for a model without per-region outputs)
        "regions": regions,
    }


def calibrated_regions(table: pd.DataFrame) -> list[str]:
    """The regions whose true and predicted DSC and NSD are in every row of the out-of-fold predictions (a model
    trained before per-region outputs has none), in the order of their columns."""
    names = [c[len("predicted_dsc_"):] for c in table.columns if c.startswith("predicted_dsc_")]
    columns = {n: [f"dsc_{n}", f"nsd_{n}", f"predicted_dsc_{n}", f"predicted_nsd_{n}"] for n in names}
    return [n for n in names if all(c in table for c in columns[n]) and not table[columns[n]].isna().to_numpy().any()]


def _calibration_block(table: pd.DataFrame, suffix: str, groups: np.ndarray, min_samples_per_bin: int
                       ) -> tuple[dict, dict, dict]:
    """(recalibration maps, conformal bins and scores, out-of-fold summary) of DSC and NSD in the columns
    dsc<suffix>, nsd<suffix>, predicted_dsc<suffix>, predicted_nsd<suffix>: suffix "" for the subject level,
    "_<region>" for a region; Mondrian bins of predicted_dsc<suffix>."""
    predicted_dsc = table[f"predicted_dsc{suffix}"].to_numpy()
    bins = choose_bins(predicted_dsc, min_samples_per_bin)
    which = bins.assign(predicted_dsc)
    true_dsc = table[f"dsc{suffix}"].to_numpy()
    subjects = pd.factorize(table["subject"])[0]
    recalibration, bin_entries, summary, scores = {}, [], {}, {}
    for metric in METRICS:
        true, raw = table[f"{metric}{suffix}"].to_numpy(), table[f"predicted_{metric}{suffix}"].to_numpy()
        mapping = IsotonicMap.fit(raw, true)
        recalibration[metric] = mapping.to_dict()
        # in-sample: the map was fitted on these very samples, so the recalibrated figures are optimistic
        summary[metric] = {"mae_raw": float(np.mean(np.abs(raw - true))),
                           "mae_recalibrated_in_sample": float(np.mean(np.abs(mapping(raw) - true))),
                           "mean_error_true_dsc_above_0_85_raw": _mean_error_above(true_dsc, raw, true),
                           "mean_error_true_dsc_above_0_85_recalibrated_in_sample":
                               _mean_error_above(true_dsc, mapping(raw), true)}
        scores[f"scores_{metric}"] = np.abs(true - cross_fitted(raw, true, groups))
        scores[f"raw_scores_{metric}"] = np.abs(true - raw)
    for b, (low, high) in enumerate(bins.ranges()):
        members = which == b
        entry = {"predicted_dsc_range": [None if math.isinf(low) else low, None if math.isinf(high) else high],
                 "num_samples": int(members.sum()), "num_subjects": int(np.unique(subjects[members]).size)}
        entry.update({key: _rounded_up(values[members]) for key, values in scores.items()})
        bin_entries.append(entry)
    conformal = {
        "method": "cross-conformal on absolute residuals of the out-of-fold predictions (scores_*: after "
                  "recalibration by a map fitted without the sample's subject group, raw_scores_*: without "
                  "recalibration), Mondrian per bin of the network's predicted DSC",
        "cross_fit_groups": int(len(np.unique(groups))),
        "bin_variable": f"predicted_dsc{suffix}",
        "min_samples_per_bin": int(min_samples_per_bin),
        "bin_edges": list(bins.edges),
        "bins": bin_entries,
    }
    return recalibration, conformal, summary


def _is_current(calibration: dict, model_folder: str, folds: list[int]) -> bool:
    built = calibration.get("built_from", {})
    if calibration.get("format_version") != FORMAT_VERSION or built.get("folds") != folds:
        return False
    for source in built.get("sources", []):
        path = join(model_folder, source["file"])
        if not isfile(path) or os.path.getsize(path) != source.get("size", os.path.getsize(path)):
            return False
        if file_sha256(path) != source["sha256"]:
            return False
    return True


def read_calibration_file(path: str) -> dict:
    """calibration.json, checked to be one this nnQC can use; CorruptCalibrationData naming the file otherwise
    (so that a damaged file is reported, not taken for a model without calibration)."""
    try:
        calibration = load_json(path)
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        reason = " ".join(str(e).split())
        raise CorruptCalibrationData(f"{path}: cannot read it as JSON ({type(e).__name__}: {reason})") from e
    if not isinstance(calibration, dict):
        raise CorruptCalibrationData(f"{path}: not a calibration (a JSON {type(calibration).__name__})")
    if calibration.get("format_version") not in READABLE_VERSIONS:
        raise CorruptCalibrationData(f"{path}: format_version {calibration.get('format_version')!r}, this nnQC "
                                     f"reads {' and '.join(map(str, READABLE_VERSIONS))}")
    try:
        folds = calibration["built_from"]["folds"]
        if not isinstance(folds, list) or not all(isinstance(f, int) for f in folds):
            raise TypeError(f"built_from.folds is {folds!r}")
        Calibration(calibration)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise CorruptCalibrationData(f"{path}: incomplete or damaged ({type(e).__name__}: {e})") from e
    return calibration


def load_or_build_calibration(model_folder: str, folds: Sequence[int] | None = None,
                              min_samples_per_bin: int = MIN_SAMPLES_PER_BIN) -> dict:
    """calibration.json of the model folder for exactly these folds (default: all with out-of-fold
    predictions), rebuilt and saved (atomically) when it is missing or was built from other folds or files.
    A model folder that cannot be written gets the calibration in memory, with "saved": False.

    A damaged calibration.json is rebuilt when the out-of-fold predictions are there (it is derived from them);
    without them its CorruptCalibrationData is raised rather than CalibrationDataMissing, so that the damage is
    what a caller reports."""
    folds = sorted(int(f) for f in (calibration_folds(model_folder) if folds is None else folds))
    path = join(model_folder, CALIBRATION_FILE)
    damaged = None
    if isfile(path):
        try:
            calibration = read_calibration_file(path)
        except CorruptCalibrationData as e:
            calibration, damaged = None, e
        if calibration is not None and folds and _is_current(calibration, model_folder, folds):
            return calibration
    try:
        calibration = build_calibration(model_folder, folds, min_samples_per_bin)
    except CalibrationDataMissing as missing:
        if damaged is not None:
            raise CorruptCalibrationData(f"{damaged}; it cannot be rebuilt: {missing}") from missing
        raise
    try:
        write_json_atomically(path, calibration)
    except OSError:
        calibration["saved"] = False
    return calibration


class Calibration:
    """The decisions' side of calibration.json: recalibrated points and conformal intervals for new cases.

    `regions` holds one Calibration per calibrated region (its DSC and NSD, binned by its own predicted DSC); empty
    for a calibration of a model without per-region outputs, or one written before them (format_version 1)."""

    def __init__(self, calibration: dict, recalibrate: bool = True):
        self.data, self.recalibrate = calibration, recalibrate
        self.regions = {name: Calibration({**block, "built_from": calibration["built_from"]}, recalibrate)
                        for name, block in calibration.get("regions", {}).items()}
        conformal = calibration["conformal"]
        self.bins = MondrianBins(tuple(conformal["bin_edges"]))
        self.maps = {m: IsotonicMap.from_dict(calibration["recalibration"][m]) if recalibrate else identity_map()
                     for m in METRICS}
        prefix = "scores_" if recalibrate else "raw_scores_"
        self.conformal = {m: MondrianConformal(self.bins, [b[prefix + m] for b in conformal["bins"]])
                          for m in METRICS}

    @property
    def folds(self) -> list[int]:
        return list(self.data["built_from"]["folds"])

    @property
    def mirroring(self) -> str:
        """The test-time mirroring of the predictions it was built from (see predictions_mirroring)."""
        return str(self.data["built_from"].get("test_time_mirroring", "none"))

    def mirroring_mismatch(self, used: str) -> str | None:
        """Why this calibration may not fit predictions mirrored as `used` says ("0 1 2", "none"): its own
        out-of-fold predictions were mirrored otherwise."""
        made = self.mirroring
        if made == used:
            return None

        def how(label: str) -> str:
            return ("without test-time mirroring" if label == "none" else
                    "with test-time mirroring in some folds only" if label == "mixed" else
                    f"with test-time mirroring over axes {label}")

        remedy = ("without --disable_tta they would be" if used == "none" else
                  "--disable_tta predicts as they were made, or nnQC_train DATASET CONFIGURATION FOLD --val "
                  "validates the folds again with mirroring")
        return (f"its out-of-fold predictions were made {how(made)}, these {how(used)}, so its recalibration and "
                f"intervals may not fit them ({remedy})")

    def point(self, metric: str, predicted: Sequence[float]) -> np.ndarray:
        """The recalibrated prediction (unchanged with recalibrate=False)."""
        return np.clip(self.maps[metric](predicted), 0, 1)

    def intervals(self, metric: str, predicted_dsc: Sequence[float], predicted: Sequence[float] | None = None,
                  alpha: float = DEFAULT_ALPHA) -> Intervals:
        """Intervals of `metric` ("dsc" or "nsd") at coverage 1 - α for cases with the network's predicted DSC
        (ensemble mean; it chooses the Mondrian bin) and the network's prediction of the metric (for "dsc" the
        same values, the default)."""
        predicted = predicted_dsc if predicted is None else predicted
        return self.conformal[metric].intervals(predicted_dsc, self.point(metric, predicted), alpha)

    def shortfall(self, alpha: float) -> list[str]:
        """One line per Mondrian bin with too few calibration samples for a finite interval at 1 - α."""
        needed = minimum_calibration_samples(alpha)
        lines = []
        for entry in self.data["conformal"]["bins"]:
            if entry["num_samples"] < needed:
                low, high = entry["predicted_dsc_range"]
                lines.append(f"predicted DSC {low if low is not None else '-inf'} to "
                             f"{high if high is not None else 'inf'}: {entry['num_samples']} calibration "
                             f"samples, coverage {1 - alpha:g} needs {needed}; intervals there are [0, 1]")
        return lines
