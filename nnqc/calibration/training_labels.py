"""Which labels a trained model has seen: fold_X/training_labels.json, written at the start of training.

A dataset may declare a label that no training candidate contains (a rare class, or one only some sites
annotate); the network then never learned what that label's masks mean, and a segmentation holding it is outside
the training range (nnqc.calibration.training_range). Each fold records the labels of its own training
candidates (from the LABELS_COLUMN that nnQC_convert writes into qc_targets.csv); an ensemble has seen a label
when every one of its folds has.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, maybe_mkdir_p

from nnqc.atomic_files import write_json_atomically
from nnqc.qc_data.targets_table import LABELS_COLUMN, parse_labels

TRAINING_LABELS_FILE = "training_labels.json"


def training_labels_record(training_samples: pd.DataFrame) -> dict:
    """The content of training_labels.json for a fold's training samples (rows of qc_targets.csv): the labels
    present in at least one candidate and in how many candidates each is; labels None when the table does not
    record them (a dataset converted by an nnQC before the column existed)."""
    if LABELS_COLUMN not in training_samples:
        return {"labels": None, "num_training_samples": len(training_samples),
                "reason": f"qc_targets.csv has no {LABELS_COLUMN!r} column (converted by an earlier nnQC; run "
                          f"nnQC_convert and nnQC_plan_and_preprocess again to record it)"}
    counts: dict[int, int] = {}
    for text in training_samples[LABELS_COLUMN]:
        for label in parse_labels(text):
            counts[label] = counts.get(label, 0) + 1
    return {"labels": sorted(counts), "num_training_samples": len(training_samples),
            "candidates_per_label": {str(k): counts[k] for k in sorted(counts)}}


def write_training_labels(fold_folder: str, training_samples: pd.DataFrame) -> dict:
    record = training_labels_record(training_samples)
    maybe_mkdir_p(fold_folder)
    write_json_atomically(join(fold_folder, TRAINING_LABELS_FILE), record)
    return record


def ensemble_training_labels(model_folder: str, folds: Sequence[int | str]) -> tuple[set[int] | None, str]:
    """(labels every fold's training candidates contained, "") or (None, why they are not known)."""
    common: set[int] | None = None
    for fold in folds:
        path = join(model_folder, f"fold_{fold}", TRAINING_LABELS_FILE)
        if not isfile(path):
            return None, f"fold_{fold}/{TRAINING_LABELS_FILE} does not exist (trained by an earlier nnQC)"
        record = load_json(path)
        if record.get("labels") is None:
            return None, f"fold_{fold}: {record.get('reason', 'no labels recorded')}"
        labels = set(record["labels"])
        common = labels if common is None else common & labels
    if common is None:
        return None, "no fold given"
    return common, ""
