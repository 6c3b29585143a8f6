"""Reading an nnQC_predict output folder back: its settings and summary, checked to be one, and nnQC_evaluate's
figures and per-case table when they exist."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from nnqc.output_files import EVALUATION_CSV, EVALUATION_JSON, SETTINGS_JSON, SUMMARY_CSV


def read_prediction_output(output_folder: str) -> tuple[dict, pd.DataFrame]:
    """predict_settings.json and qc_summary.csv of an nnQC_predict output folder, checked to be one."""
    if not os.path.isdir(output_folder):
        raise FileNotFoundError(f"output folder {output_folder} does not exist")
    missing = [name for name in (SETTINGS_JSON, SUMMARY_CSV) if not os.path.isfile(os.path.join(output_folder, name))]
    if missing:
        raise FileNotFoundError(f"{output_folder} is not an nnQC_predict output folder: {', '.join(missing)} missing")
    try:
        with open(os.path.join(output_folder, SETTINGS_JSON)) as f:
            settings = json.load(f)
        table = pd.read_csv(os.path.join(output_folder, SUMMARY_CSV), dtype={"case": str, "status": str})
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the nnQC_predict output in {output_folder}: {e}") from e
    for key in ("file_ending", "region_names"):
        if key not in settings:
            raise ValueError(f"{os.path.join(output_folder, SETTINGS_JSON)} lacks {key!r}")
    missing_columns = {"case", "predicted_dsc", "predicted_nsd", "status"} - set(table.columns)
    if missing_columns:
        raise ValueError(f"{os.path.join(output_folder, SUMMARY_CSV)} lacks the column(s) {sorted(missing_columns)}")
    table["status"] = table["status"].fillna("skipped: unknown reason")
    table["flagged"] = table["flagged"].map(is_true) if "flagged" in table else False
    return settings, table


def is_true(value) -> bool:
    """A CSV cell that says True (pandas reads True/False columns with gaps as objects)."""
    return value is True or (isinstance(value, (bool, np.bool_)) and bool(value)) or str(value).lower() == "true"


def worst_first(table: pd.DataFrame) -> pd.DataFrame:
    """Assessed cases by ascending predicted DSC (cases without a prediction after them, then by name)."""
    ok = table[table["status"] == "ok"]
    return ok.sort_values(["predicted_dsc", "case"], na_position="last", kind="stable").reset_index(drop=True)


def read_evaluation_output(output_folder: str) -> tuple[dict | None, pd.DataFrame | None]:
    """nnQC_evaluate's figures (qc_evaluation.json) and per-case table (qc_evaluation.csv, indexed by case), each
    None when nnQC_evaluate has not written it."""
    figures, per_case = None, None
    path = os.path.join(output_folder, EVALUATION_JSON)
    if os.path.isfile(path):
        with open(path) as f:
            figures = json.load(f)
    path = os.path.join(output_folder, EVALUATION_CSV)
    if os.path.isfile(path):
        per_case = pd.read_csv(path, dtype={"case": str}).set_index("case")
    return figures, per_case
