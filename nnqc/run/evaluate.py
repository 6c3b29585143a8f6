"""`nnQC_evaluate`: how well nnQC_predict's quality estimates matched the truth, once references exist."""
from __future__ import annotations

import argparse
import json
import os
import sys

from nnunetv2.configuration import default_num_processes
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnqc import paths
from nnqc.evaluation.evaluate import evaluate_predictions
from nnqc.output_files import EVALUATION_JSON


def load_dataset_json(dataset_name_or_id: str) -> dict:
    """dataset.json of a dataset under nnUNet_raw, else under nnUNet_preprocessed."""
    name = maybe_convert_to_dataset_name(dataset_name_or_id)
    for base in (paths.nnUNet_raw(), paths.nnUNet_preprocessed()):
        if base is not None and os.path.isfile(os.path.join(base, name, "dataset.json")):
            with open(os.path.join(base, name, "dataset.json")) as f:
                return json.load(f)
    raise FileNotFoundError(f"no dataset.json of {name} under nnUNet_raw ({paths.nnUNet_raw()}) or "
                            f"nnUNet_preprocessed ({paths.nnUNet_preprocessed()})")


def evaluate_entry() -> None:
    parser = argparse.ArgumentParser(description="Compare nnQC_predict's predicted DSC, NSD and error maps with "
                                                 "reference segmentations: Pearson r, MAE, DSC_SEM, scatter plots.")
    parser.add_argument("-o", required=True, help="nnQC_predict output folder (results are added to it)")
    parser.add_argument("-ref", required=True, help="reference segmentations folder: CASE.ext per case")
    parser.add_argument("-d", default=None, help="dataset name or id whose dataset.json (regions, "
                                                 "nsd_tolerance_mm) replaces the one recorded by nnQC_predict")
    parser.add_argument("--balanced", action="store_true", help="compute the figures over a DSC-balanced subset "
                                                                "(10 DSC bins, each cut to the smallest one)")
    parser.add_argument("-np", type=int, default=default_num_processes,
                        help=f"number of processes (default {default_num_processes})")
    args = parser.parse_args()
    if args.np < 1:
        parser.error("-np must be at least 1")
    try:
        dataset_json = load_dataset_json(args.d) if args.d is not None else None
        evaluate_predictions(args.o, args.ref, dataset_json, args.balanced, args.np)
    except (FileNotFoundError, ValueError, RuntimeError, TypeError) as e:
        print(f"nnQC_evaluate: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"figures: {os.path.join(args.o, EVALUATION_JSON)}")


if __name__ == "__main__":
    evaluate_entry()
