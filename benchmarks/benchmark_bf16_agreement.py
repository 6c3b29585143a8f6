"""bf16 against fp32 with a trained nnQC model: predicted DSC, NSD and SEMs of every case, both ways.

    python benchmarks/benchmark_bf16_agreement.py -m MODEL_FOLDER -i IMAGES -s SEGMENTATIONS [-f 0 1 ...]
        [-chk checkpoint_final.pth] [--threads 2]

e.g. the demo's model, nnqc_demo_data/results/Dataset501_DemoPhantomQC/nnQCTrainer_CPUDemo__nnQCPlans__3d_fullres,
with its held-out images and segmentations. Each case is read and preprocessed once, then predicted by the fold
ensemble in fp32 and under bf16 autocast (as nnQC_predict runs on CPUs with native bf16). Per case: |ΔDSC| and
|ΔNSD| of the ensemble and the largest per-fold difference, the share of SEM voxels (all regions, network grid)
that agree, the share of voxels flagged wrong by either that both flag, and the forward seconds.
Targets: |ΔDSC| and |ΔNSD| within 0.01 for every case, SEM voxel agreement >= 99.5 %.
"""
import argparse
import sys
import time

import numpy as np
import torch

from nnqc.inference.case_failures import CaseError
from nnqc.inference.cases import find_cases
from nnqc.inference.predictor import nnQCPredictor

MAX_DIFFERENCE = 0.01
MIN_SEM_AGREEMENT = 0.995


def load_predictors(model_folder: str, folds, checkpoint: str) -> dict[str, nnQCPredictor]:
    predictors = {}
    for precision in ("fp32", "bf16"):
        predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False, fp32=precision == "fp32")
        predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint)
        predictors[precision] = predictor
    return predictors


def compare_case(predictors: dict[str, nnQCPredictor], data: np.ndarray, candidate: np.ndarray) -> dict:
    results, seconds = {}, {}
    for precision, predictor in predictors.items():
        start = time.perf_counter()
        results[precision] = predictor.predict_preprocessed(data, candidate)
        seconds[precision] = time.perf_counter() - start
    a, b = results["fp32"], results["bf16"]
    row = {"dsc_fp32": float(np.mean(a["dsc_per_fold"])), "nsd_fp32": float(np.mean(a["nsd_per_fold"])),
           "delta_dsc": abs(float(np.mean(a["dsc_per_fold"]) - np.mean(b["dsc_per_fold"]))),
           "delta_nsd": abs(float(np.mean(a["nsd_per_fold"]) - np.mean(b["nsd_per_fold"]))),
           "max_fold_delta": float(max(np.abs(a["dsc_per_fold"] - b["dsc_per_fold"]).max(),
                                       np.abs(a["nsd_per_fold"] - b["nsd_per_fold"]).max())),
           "seconds_fp32": seconds["fp32"], "seconds_bf16": seconds["bf16"],
           "sem_agreement": np.nan, "flagged_overlap": np.nan}
    if a["sem"] is not None:
        row["sem_agreement"] = float(np.mean(a["sem"] == b["sem"]))
        either = np.count_nonzero(a["sem"] | b["sem"])
        row["flagged_overlap"] = float(np.count_nonzero(a["sem"] & b["sem"]) / either) if either else 1.0
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", required=True, help="trained model folder (TRAINER__PLANS__CONFIGURATION)")
    parser.add_argument("-i", required=True, help="images folder: CASE_0000.ext, ...")
    parser.add_argument("-s", required=True, help="segmentations folder: CASE.ext")
    parser.add_argument("-f", nargs="+", default=None, help="folds (default: every trained fold)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        predictors = load_predictors(args.m, args.f, args.chk)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(f"benchmark_bf16_agreement: error: {e}")
    if predictors["bf16"].precision != "bf16":
        sys.exit("benchmark_bf16_agreement: this CPU has no native bf16 (AMX or AVX-512 BF16), so nnQC_predict "
                 "runs fp32 here and there is nothing to compare (NNQC_CPU_BF16=1 forces the emulated, slow bf16)")
    reference = predictors["fp32"]
    cases, problems = find_cases(args.i, args.s, reference.dataset_json["file_ending"],
                                 len(reference.dataset_json["channel_names"]))
    print(f"model {args.m}, folds {reference.folds}, {len(cases)} case(s), CPU, {args.threads} threads")
    print(f"{'case':<28}{'DSC fp32':>9}{'|ΔDSC|':>9}{'NSD fp32':>9}{'|ΔNSD|':>9}{'fold max |Δ|':>13}"
          f"{'SEM agree':>11}{'flagged both':>13}{'fp32 s':>8}{'bf16 s':>8}")
    rows = []
    for case in cases:
        try:
            data, candidate, _ = reference.preprocess_files(case)
        except CaseError as e:
            problems[case.case] = str(e)
            continue
        row = compare_case(predictors, data, candidate)
        rows.append(row)
        print(f"{case.case:<28}{row['dsc_fp32']:>9.4f}{row['delta_dsc']:>9.4f}{row['nsd_fp32']:>9.4f}"
              f"{row['delta_nsd']:>9.4f}{row['max_fold_delta']:>13.4f}{row['sem_agreement']:>11.3%}"
              f"{row['flagged_overlap']:>13.1%}{row['seconds_fp32']:>8.2f}{row['seconds_bf16']:>8.2f}", flush=True)
    for case, reason in sorted(problems.items()):
        print(f"skipped {case}: {reason}")
    if not rows:
        sys.exit("benchmark_bf16_agreement: error: no case could be compared")
    worst_dsc = max(r["delta_dsc"] for r in rows)
    worst_nsd = max(r["delta_nsd"] for r in rows)
    sem = [r["sem_agreement"] for r in rows if np.isfinite(r["sem_agreement"])]
    worst_sem = min(sem) if sem else np.nan
    met = worst_dsc <= MAX_DIFFERENCE and worst_nsd <= MAX_DIFFERENCE and (not sem or worst_sem >= MIN_SEM_AGREEMENT)
    print(f"\nworst of {len(rows)} case(s){f' ({len(problems)} skipped)' if problems else ''}: |ΔDSC| "
          f"{worst_dsc:.4f}, |ΔNSD| {worst_nsd:.4f} (target <= {MAX_DIFFERENCE}), SEM voxel agreement "
          f"{worst_sem:.3%} (target >= {MIN_SEM_AGREEMENT:.1%}); mean forward fp32 "
          f"{np.mean([r['seconds_fp32'] for r in rows]):.2f} s, "
          f"bf16 {np.mean([r['seconds_bf16'] for r in rows]):.2f} s")
    print(f"targets met: {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
