"""Reading qc_targets.csv (one row per QC sample) as a table for training, inference and evaluation."""
from __future__ import annotations

import os

import pandas as pd

REQUIRED_COLUMNS = ("sample", "subject", "source", "dsc", "nsd")


def read_targets(path: str) -> pd.DataFrame:
    """qc_targets.csv with ids kept as strings; a clear error if it is missing or malformed."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: run nnQC_convert and nnQC_plan_and_preprocess first")
    table = pd.read_csv(path, dtype={"sample": str, "subject": str, "source": str}, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}")
    return table
