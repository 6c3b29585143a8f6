"""qc_targets.csv, one row per QC sample: its columns, writing it, and the one reader everybody uses.

Floats are written with repr, which pandas (>= 3) parses back exactly, so verification can compare targets
exactly and training sees the values conversion computed.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

TARGETS_CSV = "qc_targets.csv"
BASE_COLUMNS = ("sample", "subject", "source", "generator", "seed", "dsc", "nsd")
# fraction of the candidate's / the reference's foreground outside the network's view (nnqc.qc_data.view)
VIEW_COLUMNS = ("candidate_outside_view", "reference_outside_view")
# the foreground labels present in the candidate, space-separated ("" for an empty one): what a trained model has
# seen, so that prediction can name labels it never saw (nnqc.calibration.fold_coverage)
LABELS_COLUMN = "labels"
REQUIRED_COLUMNS = ("sample", "subject", "source", "generator", "seed", "dsc", "nsd")
ID_COLUMNS = ("sample", "subject", "source", "generator")
TEXT_COLUMNS = (*ID_COLUMNS, LABELS_COLUMN)


def target_value_columns(region_names: Sequence[str]) -> list[str]:
    """The quality targets: subject-level DSC and NSD, then per region."""
    return ["dsc", "nsd", *(f"dsc_{r}" for r in region_names), *(f"nsd_{r}" for r in region_names)]


def target_columns(region_names: Sequence[str]) -> list[str]:
    """qc_targets.csv columns, in order."""
    return [*BASE_COLUMNS, *(f"dsc_{r}" for r in region_names), *(f"nsd_{r}" for r in region_names),
            *VIEW_COLUMNS, LABELS_COLUMN]


def labels_text(label_map: np.ndarray) -> str:
    """The LABELS_COLUMN value of a label map: its foreground labels in ascending order, space-separated."""
    counts = np.bincount(np.asarray(label_map, dtype=np.uint8).ravel(), minlength=256)
    return " ".join(str(v) for v in np.flatnonzero(counts[1:]) + 1)


def parse_labels(text: str) -> set[int]:
    """LABELS_COLUMN value -> set of labels."""
    return {int(v) for v in str(text).split()}


def qc_targets_csv_text(rows: Iterable[dict], region_names: Sequence[str]) -> str:
    """CSV text, one row per sample in the given order; floats written with repr so they round-trip."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = target_columns(region_names)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([repr(float(row[c])) if isinstance(row[c], float) else row[c] for c in columns])
    return buffer.getvalue()


def read_targets(path: str) -> pd.DataFrame:
    """qc_targets.csv with ids kept as strings; a clear error if it is missing, malformed or lists a sample twice."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: run nnQC_convert and nnQC_plan_and_preprocess first")
    try:
        table = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise ValueError(f"{path} cannot be read: {str(e).strip().splitlines()[0]}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}")
    duplicated = table["sample"][table["sample"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path} lists samples more than once: {duplicated[:5]}")
    return table


def target_rows(path: str) -> tuple[list[str], list[dict]]:
    """Columns and rows (dicts of plain Python values) of qc_targets.csv, through read_targets."""
    table = read_targets(path)
    return list(table.columns), table.to_dict("records")
