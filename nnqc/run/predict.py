"""`nnQC_predict`: predicted DSC, NSD and error maps for folders of cases, without ground truth."""
from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch
from batchgenerators.utilities.file_and_folder_operations import join

from nnqc.calibration.conformal import DEFAULT_ALPHA, check_alpha
from nnqc.calibration.decision import decision_counts
from nnqc.calibration.region_quality import NO_PER_REGION_OUTPUTS
from nnqc.evaluation.figures import format_interval, format_number
from nnqc.experiment_planning.planner import DEFAULT_PLANS_NAME
from nnqc.inference.case_failures import ERROR, SKIPPED, status_kind
from nnqc.inference.predictor import DEFAULT_FLAG_BELOW, nnQCPredictor
from nnqc.inference.worst_slices import DEFAULT_NUM_WORST_SLICES
from nnqc.model_sharing.model_metadata import describe_model, load_model_metadata
from nnqc.model_sharing.model_metadata import trained_model_folder as model_folder
from nnqc.output_files import ERRORS_LOG
from nnqc.run.threads import set_thread_counts
from nnqc.trusted_classes import trust_classes

# exit status: 0 when every case was assessed or skipped for a named problem with its inputs (at least one
# assessed); EXIT_FAILED when the run could not start or stopped, or no case was assessed; EXIT_CASE_ERRORS when
# some case failed unexpectedly (summary written, tracebacks in qc_errors.log)
EXIT_FAILED, EXIT_CASE_ERRORS = 1, 2


def _table_number(value) -> str:
    """A number in the printed table, its cell empty where there is none."""
    return format_number(value, missing="")


def _reason_names(text) -> str:
    """The short names (spacing, intensity, ...) of a case's out-of-training-range reasons."""
    if not isinstance(text, str) or not text:
        return ""
    return ",".join(dict.fromkeys(part.split(":", 1)[0].strip() for part in text.split("; ")))


def _worst_region(row) -> str:
    """'ET 0.42 fail': the case's worst region, its (calibrated) DSC and decision; empty without per-region outputs."""
    name = row.get("worst_region")
    if not isinstance(name, str) or not name:
        return ""
    decision = row.get("worst_region_decision")
    return " ".join(p for p in (name, _table_number(row.get("worst_region_dsc")),
                                decision if isinstance(decision, str) else "") if p)


def print_table(table) -> None:
    """The summary as a plain table, worst first: predictions, the calibrated DSC with its interval and the
    decision, the worst region, what the network did not see and why a case is outside the training range (names
    only; the summary files have the details, every region's among them)."""
    shown = pd.DataFrame({"case": table["case"]})
    for column in ("predicted_dsc", "predicted_dsc_sd", "predicted_nsd", "calibrated_dsc"):
        if column in table:
            shown[column] = table[column].map(_table_number)
    if "dsc_lower" in table:
        shown["dsc_interval"] = [format_interval(lo, hi) for lo, hi in zip(table["dsc_lower"], table["dsc_upper"])]
    for column, name in (("ensemble_agreement", "agreement"), ("fused_dsc", "fused_dsc")):
        if column in table:
            shown[name] = table[column].map(_table_number)
    if "fused_dsc_lower" in table:
        shown["fused_interval"] = [format_interval(lo, hi)
                                   for lo, hi in zip(table["fused_dsc_lower"], table["fused_dsc_upper"])]
    for column in ("decision", "flagged", "partial_view"):
        if column in table:
            shown[column] = table[column].map(lambda v: "" if v is None or v != v else str(v))
    if "worst_region" in table:
        shown["worst_region"] = [_worst_region(row) for _, row in table.iterrows()]
    if "out_of_training_range" in table:
        shown["out_of_range"] = table["out_of_training_range"].map(_reason_names)
    for column in table.columns:
        if column.startswith("sem_volume"):
            shown[column] = table[column].map(_table_number)
    shown["status"] = table["status"]
    print(shown.to_string(index=False, max_colwidth=60))


def predict_entry() -> None:
    parser = argparse.ArgumentParser(description="Predict the quality (DSC, NSD) and the error maps of "
                                                 "segmentations with a trained nnQC model.")
    parser.add_argument("-i", required=True, help="images folder: CASE_0000.ext, CASE_0001.ext, ...")
    parser.add_argument("-s", required=True, help="segmentations folder: CASE.ext for every case to assess")
    parser.add_argument("-o", required=True, help="output folder (not an input folder)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("-d", help="dataset name or id the QC model was trained on (with -c, -tr, -p)")
    model.add_argument("-m", help="model folder (TRAINER__PLANS__CONFIGURATION with fold_X/), e.g. an installed one, "
                                  "instead of -d/-c/-tr/-p")
    parser.add_argument("-c", default=None, help="configuration (default 3d_fullres)")
    parser.add_argument("-f", nargs="+", default=None, help="folds to ensemble (default: every trained fold)")
    parser.add_argument("-tr", default=None, help="trainer (default nnQCTrainer)")
    parser.add_argument("-p", default=None, help=f"plans identifier (default {DEFAULT_PLANS_NAME})")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    parser.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="device (default cuda)")
    parser.add_argument("--no_maps", action="store_true", help="do not write the error maps")
    parser.add_argument("--flag_below", type=float, default=DEFAULT_FLAG_BELOW,
                        help=f"quality threshold (default {DEFAULT_FLAG_BELOW}): cases whose predicted DSC is below it "
                             f"are flagged; decisions: fail when the DSC interval lies below it, pass when above, "
                             f"review otherwise")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help=f"the DSC and NSD intervals hold the true value with probability 1 - alpha "
                             f"(default {DEFAULT_ALPHA})")
    parser.add_argument("--no_recalibration", action="store_true",
                        help="intervals around the network's raw prediction, without the recalibration learnt "
                             "from the out-of-fold predictions")
    parser.add_argument("-npp", type=int, default=None,
                        help="processes reading and preprocessing cases ahead of the network (0: none; default 1 "
                             "on a GPU, 0 on the CPU, where they would compete with the network for the cores)")
    parser.add_argument("-nps", type=int, default=None,
                        help="threads restoring and writing the error maps (default 2 on a GPU, 1 on the CPU)")
    parser.add_argument("-num_parts", type=int, default=1, help="split the cases into this many parts")
    parser.add_argument("-part_id", type=int, default=0, help="which part this run predicts (0-based)")
    parser.add_argument("--continue_prediction", action="store_true", help="skip cases already predicted")
    parser.add_argument("--report", action="store_true", help="write the HTML report qc_report.html")
    parser.add_argument("--fp32", action="store_true",
                        help="full precision: no bf16 autocast on CPUs with native bf16 (AMX, AVX-512 BF16) and no "
                             "mixed precision on a GPU")
    parser.add_argument("--disable_tta", action="store_true",
                        help="no test-time mirroring (default: averaged over the mirrorings of the axes the model "
                             "was trained to mirror, 8 forward passes per fold, as its final validation was made): "
                             "8 x faster, ranks real segmentations worse (see the benchmarks page)")
    parser.add_argument("--ensemble_members", nargs="+", default=[], metavar="DIR",
                        help="folders of your segmenter's ensemble members, each with a segmentation of every case "
                             "(e.g. nnUNetv2_predict ... -f N per fold): their mean pairwise DSC (ensemble "
                             "agreement) and the assessed segmentation's DSC to them go into the summary")
    parser.add_argument("--fusion", default=None, metavar="qc_fusion.json",
                        help="with --ensemble_members: the fusion nnQC_evaluate fitted on labelled cases; the fused "
                             "DSC, its interval and the decision from them go into the summary")
    parser.add_argument("--worst_slices", type=int, default=DEFAULT_NUM_WORST_SLICES, metavar="K",
                        help=f"per case and region, the K slices with the most predicted error listed in "
                             f"qc_summary.json and shown in the report (default {DEFAULT_NUM_WORST_SLICES})")
    parser.add_argument("--trust_class", nargs="+", default=[], metavar="package.module.Class",
                        help="classes a model's files may name besides nnQC's own and torch's layers (your own "
                             "trainer or network); also read from the environment variable nnQC_trusted_classes")
    args = parser.parse_args()
    try:
        trust_classes(args.trust_class)
    except ValueError as e:
        parser.error(str(e))
    if args.m is not None and (args.c, args.tr, args.p) != (None, None, None):
        parser.error("-m names the model folder itself; -c, -tr and -p go with -d only")
    try:
        check_alpha(args.alpha)
    except ValueError as e:
        parser.error(str(e))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available here; use -device cpu")
    on_cpu = device.type == "cpu"
    set_thread_counts(device.type)  # CUDA: 1 thread and 1 inter-op thread, as nnUNetv2_predict
    npp = (0 if on_cpu else 1) if args.npp is None else args.npp
    nps = (1 if on_cpu else 2) if args.nps is None else args.nps
    if args.worst_slices < 1:
        parser.error("--worst_slices must be at least 1")
    predictor = nnQCPredictor(device, fp32=args.fp32, use_mirroring=not args.disable_tta,
                              num_worst_slices=args.worst_slices)
    try:
        folder = args.m if args.m is not None else model_folder(
            args.d, args.tr or "nnQCTrainer", args.p or DEFAULT_PLANS_NAME, args.c or "3d_fullres")
        predictor.initialize_from_trained_model_folder(folder, args.f, args.chk, not args.no_recalibration)
        metadata = load_model_metadata(folder, predictor.folds, args.chk)
        metadata.update(trainer=predictor.trainer_name, configuration=predictor.configuration_name)
        print(describe_model(metadata), flush=True)
        print(f"nnQC_predict: network precision {predictor.precision}" + (
            " (this CPU computes bf16 natively; --fp32 for full precision)" if predictor.precision == "bf16" else ""))
        table = predictor.predict_from_files(args.i, args.s, args.o, not args.no_maps, args.flag_below,
                                             args.num_parts, args.part_id, args.continue_prediction, npp, nps,
                                             args.alpha, args.ensemble_members, args.fusion)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nnQC_predict: error: {e}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    print_table(table)
    partial = int(table["partial_view"].fillna(False).astype(bool).sum())
    kinds = table["status"].map(status_kind)
    assessed, errors = int((kinds == "ok").sum()), int((kinds == ERROR).sum())
    print(f"\n{assessed} case(s) assessed, {int(table['flagged'].fillna(False).sum())} "
          f"flagged (predicted DSC < {args.flag_below}), {partial} seen only in part (partial_view), "
          f"{int((kinds == SKIPPED).sum())} skipped for their inputs, {errors} failed with an error; "
          f"summary: {join(args.o, 'qc_summary.csv')}")
    if predictor.calibration is not None:
        counts = decision_counts(table.loc[table["status"] == "ok", "decision"].tolist())
        basis = "fused with the ensemble agreement" if predictor.fusion is not None else \
            "recalibrated" if predictor.calibration.recalibrate else "raw, not recalibrated"
        print(f"decisions at coverage {1 - args.alpha:g} against DSC {args.flag_below}: {counts['pass']} pass, "
              f"{counts['review']} review, {counts['fail']} fail ({basis})")
    else:
        print(f"no calibration ({predictor.calibration_status['reason']}): no intervals and no pass/review/fail "
              f"decisions, only the flag")
    if not predictor.per_region_outputs:
        print(f"NOTE: {NO_PER_REGION_OUTPUTS}")
    elif "worst_region_decision" in table:
        failing = int((table.loc[table["status"] == "ok", "worst_region_decision"] == "fail").sum())
        print(f"{failing} case(s) with a failing region (worst_region; every region's DSC, NSD, interval, decision "
              f"and worst slices are in {join(args.o, 'qc_summary.json')})")
    if args.report:
        from nnqc.evaluation.report import write_report

        print(f"report: {write_report(args.o)}")
    if errors:
        print(f"nnQC_predict: error: {errors} case(s) failed unexpectedly (not because of their inputs); their "
              f"tracebacks are in {join(args.o, ERRORS_LOG)}", file=sys.stderr)
        sys.exit(EXIT_CASE_ERRORS)
    if not assessed:
        print("nnQC_predict: error: no case was assessed (the reasons are in the summary)", file=sys.stderr)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    predict_entry()
