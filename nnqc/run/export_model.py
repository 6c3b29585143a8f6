"""`nnQC_export_model_to_zip`: a trained model as a zip to share, as nnU-Net's nnUNetv2_export_model_to_zip."""
from __future__ import annotations

import argparse
import os
import sys

from nnqc.error_messages import one_line
from nnqc.experiment_planning.planner import DEFAULT_PLANS_NAME
from nnqc.model_sharing.export import export_model_to_zip
from nnqc.model_sharing.model_metadata import DEFAULT_CHECKPOINT, describe_model


def export_model_to_zip_entry() -> None:
    parser = argparse.ArgumentParser(description="Export a trained nnQC model (what prediction needs, with its "
                                                 "metadata) as a zip that nnQC_install_pretrained_model_from_zip "
                                                 "installs.")
    parser.add_argument("-d", required=True, help="dataset name or id the QC model was trained on")
    parser.add_argument("-o", required=True, help="output file (FILE.zip)")
    parser.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    parser.add_argument("-tr", default="nnQCTrainer", help="trainer (default nnQCTrainer)")
    parser.add_argument("-p", default=DEFAULT_PLANS_NAME, help=f"plans identifier (default {DEFAULT_PLANS_NAME})")
    parser.add_argument("-f", nargs="+", default=None, help="folds to export (default: every trained fold)")
    parser.add_argument("-chk", nargs="+", default=[DEFAULT_CHECKPOINT],
                        help=f"checkpoints to export from each fold (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--training_logs", action="store_true",
                        help="also export the training logs, progress.png and debug.json of each fold")
    parser.add_argument("--validation_predictions", action="store_true",
                        help="also export each fold's validation/ folder (per-sample predictions)")
    args = parser.parse_args()
    try:
        metadata = export_model_to_zip(args.d, args.o, args.c, args.tr, args.p, args.f, args.chk,
                                       args.training_logs, args.validation_predictions)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:  # CorruptCalibrationData is a ValueError
        print(f"nnQC_export_model_to_zip: error: {one_line(e)}", file=sys.stderr)
        sys.exit(1)
    size = os.path.getsize(args.o)
    print(describe_model(metadata))
    print(f"exported {len(metadata['files']) + 1} files ({size / 1e6:.1f} MB) to {args.o}")


if __name__ == "__main__":
    export_model_to_zip_entry()
