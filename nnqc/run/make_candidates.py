"""`nnQC_make_candidates`: segmentations by nnU-Net trained on channel subsets, snapshots along training, every
one out of fold — QC training candidates from real segmenters (paper §2.2)."""
from __future__ import annotations

import argparse
import sys

from nnunetv2.configuration import default_num_processes

from nnqc.qc_data.dataset_io import ConversionError
from nnqc.segmenters.make_candidates import DEFAULT_SNAPSHOTS, DEFAULT_TRAINER, make_candidates


def make_candidates_entry() -> None:
    parser = argparse.ArgumentParser(
        prog="nnQC_make_candidates",
        description="Train nnU-Net on channel subsets of a source dataset, fold by fold, and write each fold's "
                    "validation cases at chosen epochs: out-of-fold candidates from poorly to fully trained "
                    "segmenters, one folder per subset and epoch (OUT/<subset>_ep<E>), for nnQC_convert "
                    "--candidates OUT/*. Rerun the same command to resume.")
    parser.add_argument("-s", required=True, help="source nnU-Net raw dataset: id, DatasetXXX_Name or path")
    parser.add_argument("-c", default="3d_fullres", help="nnU-Net configuration (default 3d_fullres)")
    parser.add_argument("--subsets", nargs="+", default=None, metavar="SUBSET",
                        help="channel subsets: comma-separated channel indices or names, or 'all' (default: each "
                             "channel alone and all; the paper's BraTS set is T1 T1ce T2 FLAIR T1,FLAIR T1ce,T2 all)")
    parser.add_argument("--snapshots", nargs="+", default=list(DEFAULT_SNAPSHOTS), metavar="EPOCH",
                        help="epochs to write candidates at: numbers, or percentages of the trainer's schedule "
                             f"(default {' '.join(DEFAULT_SNAPSHOTS)})".replace("%", "%%"))
    parser.add_argument("-f", nargs="+", type=int, default=None,
                        help="folds of the split to train (default: all; one fold per machine spreads the work)")
    parser.add_argument("-tr", default=DEFAULT_TRAINER,
                        help=f"nnU-Net trainer: {DEFAULT_TRAINER}, nnU-Net's nnUNetTrainer_<N>epochs, or a "
                             f"dotted path to your own (default {DEFAULT_TRAINER})")
    parser.add_argument("--initial_lr", type=float, default=None,
                        help="initial learning rate (default the trainer's; the paper slowed convergence with a "
                             "small one to sample more intermediate qualities)")
    parser.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="device (default cuda)")
    parser.add_argument("-np", type=int, default=default_num_processes,
                        help=f"processes for nnU-Net's fingerprint and preprocessing (default {default_num_processes})")
    parser.add_argument("-o", default=None,
                        help="output folder (default nnUNet_results/<source dataset>/nnqc_candidates)")
    parser.add_argument("--disable_tta", action="store_true",
                        help="predict without test-time mirroring (nnU-Net's default is with)")
    parser.add_argument("--test", action="store_true",
                        help="also segment the source's imagesTs with every fold's model at every snapshot "
                             "(OUT/test/<subset>_ep<E>_fold<F>): ensemble members for nnQC_predict "
                             "--ensemble_members, and held-out candidates")
    parser.add_argument("--prepare_only", action="store_true",
                        help="only derive, plan and preprocess the subsets' datasets (then spread folds over "
                             "machines sharing nnUNet_results)")
    args = parser.parse_args()
    try:
        result = make_candidates(args.s, args.c, args.subsets, args.snapshots, args.f, args.tr, args.initial_lr,
                                 args.device, args.np, args.o, not args.disable_tta, args.prepare_only, args.test)
    except (ConversionError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nnQC_make_candidates: error: {e}", file=sys.stderr)
        sys.exit(1)
    if args.prepare_only:
        print(f"prepared; segmenters' work folder: {result.work_folder}")
        return
    print(f"{len(result.candidate_folders)} candidate folder(s) in {result.output_folder}"
          + ("" if result.steps_run else " (nothing left to do)"))
    if result.test_folders:
        print(f"{len(result.test_folders)} folder(s) of segmented test images in {result.output_folder}/test")
    print(f"next: nnQC_convert -s {args.s} -d <QC dataset id> --candidates {result.output_folder}/*")


if __name__ == "__main__":
    make_candidates_entry()
