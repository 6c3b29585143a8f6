"""What each fold's training data covered: fold_X/training_range.json, written at the start of training.

The training-range checks of nnqc.calibration.training_range need two things nnU-Net's fingerprint does not hold:
- the labels the training candidates contained (from the LABELS_COLUMN that nnQC_convert writes into
  qc_targets.csv): a dataset may declare a label no training candidate holds, and the network never learned
  what its masks mean;
- per channel, the range of the training subjects' image intensities (image_intensity_statistics, which
  nnQCPreprocessor records in every subject's properties, and computes the same way for a case at prediction).
Each fold records those of its own training subjects; an ensemble covers what every one of its folds covers.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pandas as pd
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, maybe_mkdir_p

from nnqc.atomic_files import write_json_atomically
from nnqc.calibration.training_range import TrainingCoverage, training_intensity_range
from nnqc.preprocessing.intensity_statistics import IMAGE_INTENSITIES_PROPERTY
from nnqc.qc_data.targets_table import LABELS_COLUMN, parse_labels

TRAINING_RANGE_FILE = "training_range.json"


def fold_coverage_record(training_samples: pd.DataFrame, subject_properties: Sequence[dict]) -> dict:
    """The content of training_range.json for a fold's training samples (rows of qc_targets.csv) and the
    preprocessed properties of its training subjects: the labels present in at least one candidate (and in how
    many candidates each is) and the subjects' image intensity range; either None, with the reason, when the
    data do not record it (a dataset converted or preprocessed by an nnQC before they were recorded)."""
    record: dict = {"num_training_samples": len(training_samples), "num_training_subjects": len(subject_properties)}
    if LABELS_COLUMN in training_samples:
        counts = Counter(label for text in training_samples[LABELS_COLUMN] for label in parse_labels(text))
        record.update(labels=sorted(counts), candidates_per_label={str(k): counts[k] for k in sorted(counts)})
    else:
        record.update(labels=None, labels_unknown=f"qc_targets.csv has no {LABELS_COLUMN!r} column (converted by "
                                                  f"an earlier nnQC; run nnQC_convert again to record it)")
    intensities = [p.get(IMAGE_INTENSITIES_PROPERTY) for p in subject_properties]
    if intensities and all(i is not None for i in intensities):
        record["image_intensities"] = training_intensity_range(intensities)
    else:
        record.update(image_intensities=None,
                      intensities_unknown="the training subjects were preprocessed by an earlier nnQC (preprocess "
                                          "them again, from scratch, to record their intensities)")
    return record


def write_fold_coverage(fold_folder: str, training_samples: pd.DataFrame, subject_properties: Sequence[dict]
                        ) -> dict:
    record = fold_coverage_record(training_samples, subject_properties)
    maybe_mkdir_p(fold_folder)
    write_json_atomically(join(fold_folder, TRAINING_RANGE_FILE), record)
    return record


def _common_intensities(ranges: Sequence[dict]) -> dict:
    """Per channel, the range every fold covers: the largest lower and smallest upper median, the smallest span."""
    channels = set.intersection(*(set(r) for r in ranges))
    return {c: {"median_min": max(r[c]["median_min"] for r in ranges),
                "median_max": min(r[c]["median_max"] for r in ranges),
                "typical_span": min(r[c]["typical_span"] for r in ranges),
                "num_subjects": min(r[c]["num_subjects"] for r in ranges)} for c in sorted(channels)}


def _first_unknown(records: Sequence[tuple[int | str, dict]], key: str, reason_key: str | None = None) -> str:
    """Why `key` is not known for the first fold whose record lacks it ("" when every fold has it)."""
    for fold, record in records:
        if record.get(key) is None:
            return f"fold_{fold}: {record.get(reason_key or f'{key}_unknown', 'not recorded')}"
    return ""


def ensemble_coverage(model_folder: str, folds: Sequence[int | str]) -> TrainingCoverage:
    """What every one of the folds' training data covered, from their training_range.json."""
    records = []
    for fold in folds:
        path = join(model_folder, f"fold_{fold}", TRAINING_RANGE_FILE)
        if not isfile(path):
            why = f"fold_{fold}/{TRAINING_RANGE_FILE} does not exist (trained by an earlier nnQC)"
            return TrainingCoverage(labels_unknown=why, intensities_unknown=why)
        records.append((fold, load_json(path)))
    if not records:
        return TrainingCoverage(labels_unknown="no fold given", intensities_unknown="no fold given")
    coverage = TrainingCoverage()
    unknown = _first_unknown(records, "labels")
    if unknown:
        coverage.labels_unknown = unknown
    else:
        coverage.labels = set.intersection(*(set(r["labels"]) for _, r in records))
    unknown = _first_unknown(records, "image_intensities", "intensities_unknown")
    if unknown:
        coverage.intensities_unknown = unknown
    else:
        coverage.intensities = _common_intensities([r["image_intensities"] for _, r in records])
    return coverage
