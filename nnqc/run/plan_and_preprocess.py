"""nnQC_plan_and_preprocess: fingerprint, plan and preprocess QC datasets (nnUNetv2_plan_and_preprocess for QC)."""
import argparse
import sys

from nnqc.experiment_planning.plan_and_preprocess import plan_and_preprocess
from nnqc.experiment_planning.planner import DEFAULT_PLANS_NAME, QC_CONFIGURATION
from nnqc.preprocessing.qc_dataset import QCDatasetError


def plan_and_preprocess_entry() -> None:
    parser = argparse.ArgumentParser(
        description="Extract the fingerprint of QC datasets built by nnQC_convert, plan QCResUNet "
                    f"({DEFAULT_PLANS_NAME}.json, {QC_CONFIGURATION} only) and preprocess subjects and candidates.")
    parser.add_argument("-d", nargs="+", required=True, metavar="DATASET_ID",
                        help="QC dataset id(s) or name(s) in nnUNet_raw")
    parser.add_argument("-c", nargs="+", default=[QC_CONFIGURATION], choices=[QC_CONFIGURATION],
                        help=f"configurations to preprocess (nnQC plans only {QC_CONFIGURATION})")
    parser.add_argument("-np", type=int, default=None,
                        help="worker processes (default: nnUNet_def_n_proc, else min(8, CPU count))")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="run nnU-Net's dataset checks and check every candidate's header against its "
                             "reference before fingerprinting")
    parser.add_argument("--clean", action="store_true",
                        help="extract the fingerprint and preprocess everything again instead of reusing "
                             "what is up to date")
    parser.add_argument("--no_pp", action="store_true", help="fingerprint and plan only")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.np is not None and args.np < 1:
        parser.error("-np must be at least 1")
    try:
        plan_and_preprocess(args.d, args.c, args.np, args.verify_dataset_integrity, args.clean, args.no_pp,
                            args.verbose)
    except QCDatasetError as e:
        print(f"nnQC_plan_and_preprocess: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    plan_and_preprocess_entry()
