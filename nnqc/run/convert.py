"""nnQC_convert: build a raw QC dataset from an nnU-Net raw dataset, or verify one."""
import argparse
import sys
import warnings

from nnunetv2.configuration import default_num_processes

from nnqc.process_pool import WorkerDiedError
from nnqc.qc_data.dataset_io import ConversionError, resolve_raw_dataset_folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnQC_convert",
        description="Build a QC dataset ($nnUNet_raw/DatasetYYY_NameQC) from an nnU-Net raw dataset: candidate "
                    "segmentations from external folders, SegGen and degradations, with DSC/NSD targets. "
                    "Interrupted runs resume where they stopped. With --verify, check an existing QC dataset.")
    parser.add_argument("-s", "--source", type=str, default=None,
                        help="source nnU-Net raw dataset: id, DatasetXXX_Name, or path to a folder with "
                             "imagesTr, labelsTr and dataset.json")
    parser.add_argument("-d", "--dataset", type=str, required=True,
                        help="id of the QC dataset to build (with --verify: its id, name or path)")
    parser.add_argument("-n", "--name", type=str, default=None,
                        help="QC dataset name (default: the source's name + 'QC')")
    parser.add_argument("--candidates", nargs="+", default=[], metavar="DIR",
                        help="folders of segmentations by any segmenter (CASE + file_ending, as nnU-Net writes "
                             "predictions); one source per folder")
    parser.add_argument("--candidate_tags", nargs="+", default=None, metavar="TAG",
                        help="source tag per --candidates folder (default: the folder names)")
    parser.add_argument("--nnunet_model", nargs="+", default=[], metavar="MODEL",
                        help="trained nnU-Net model folder(s) (TRAINER__PLANS__CONFIGURATION) or zip(s) exported "
                             "with nnUNetv2_export_model_to_zip --exp_cv_preds: each fold's validation "
                             "segmentations become a candidate source <model>_fold<N>; the source's "
                             "splits_final.json must be the split the model was trained on")
    parser.add_argument("--seggen", type=int, default=3, help="SegGen samples per subject (default 3)")
    degradations = parser.add_mutually_exclusive_group()
    degradations.add_argument("--degradations", type=int, default=10,
                              help="degraded samples per subject, cycling through the families (default 10)")
    degradations.add_argument("--no_degradations", action="store_true", help="no degraded samples")
    parser.add_argument("--families", nargs="+", default=None, metavar="FAMILY",
                        help="degradation families to cycle through: names, or the groups 'classic' (the paper's "
                             "kind, each spanning the whole DSC range; the default), 'boundary' (real segmenters' "
                             "boundary errors at the top of the range) and 'all'")
    parser.add_argument("--tolerance", type=float, default=None, metavar="MM",
                        help="NSD tolerance in mm (default: the source dataset.json's nsd_tolerance_mm, else 1)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the generated samples (default 0)")
    parser.add_argument("-np", type=int, default=default_num_processes,
                        help=f"worker processes (default {default_num_processes})")
    parser.add_argument("--num_parts", type=int, default=1,
                        help="split the subjects into this many parts, run separately (default 1)")
    parser.add_argument("--part_id", type=int, default=0, help="the part this run does, 0..num_parts-1")
    parser.add_argument("--verify", action="store_true",
                        help="only check an existing QC dataset (files, geometry, labels, targets); exit code 1 "
                             "on any problem")
    parser.add_argument("--verify_all", action="store_true",
                        help="with --verify: recompute the targets of every sample, not a spread subset")
    return parser


def convert_entry() -> None:
    args = _parser().parse_args()
    # imported here so that --help stays fast
    from nnqc.qc_data.conversion import OutsideViewWarning, convert_dataset
    from nnqc.qc_data.verification import DEFAULT_NUM_RECOMPUTED, verify_qc_dataset

    def show(message, category, *_args, **_kwargs) -> None:
        print(f"nnQC_convert: warning: {message}", file=sys.stderr)

    warnings.simplefilter("always", OutsideViewWarning)
    warnings.showwarning = show
    try:
        if args.verify:
            folder = resolve_raw_dataset_folder(args.dataset)
            report = verify_qc_dataset(folder, args.np, None if args.verify_all else DEFAULT_NUM_RECOMPUTED)
            print(report.summary())
            sys.exit(0 if report.ok else 1)
        if args.source is None:
            raise ConversionError("-s SOURCE is required to build a QC dataset")
        try:
            target_id = int(args.dataset)
        except ValueError:
            raise ConversionError(f"-d must be the numeric id of the QC dataset to build, got {args.dataset!r}") \
                from None
        convert_dataset(args.source, target_id, args.name, args.candidates, args.candidate_tags, args.seggen,
                        0 if args.no_degradations else args.degradations, args.tolerance, args.seed, args.np,
                        args.num_parts, args.part_id, families=args.families, nnunet_models=args.nnunet_model)
    except (ConversionError, WorkerDiedError) as e:
        print(f"nnQC_convert: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    convert_entry()
