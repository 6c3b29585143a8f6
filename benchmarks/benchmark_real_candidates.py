"""Do candidates from real segmenters help? QC trained on synthetic candidates only vs. with nnU-Net candidates.

    python benchmarks/benchmark_real_candidates.py [--minutes 12] [--subjects 40] [--held_out 10] [--keep DIR]

BraTS-like phantoms (the demo's size). Two QC datasets of the same training subjects:
  (a) SegGen + degradations only;
  (b) the same plus nnQC_make_candidates output: nnU-Net trained on the T1ce and all-channel subsets
      (3 folds, nnUNetTrainer_10epochs_25iterations), snapshots at 20 %, 50 % and 100 % of training.
Each trains QCResUNet (nnQCTrainer_CPUDemo schedule) for the same wall time on fold 0. Both are evaluated on
candidates neither saw, from a segmenter neither saw: the held-out subjects segmented out of fold by nnU-Net trained
on the FLAIR channel only (2 folds over the held-out subjects, snapshots at 20 %, 50 %, 100 %). Prints DSC r / MAE
and NSD r / MAE of both. About an hour on 2 CPU cores with the defaults.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_learning import figure, time_limited  # noqa: E402

SEGMENTER = "nnUNetTrainer_10epochs_25iterations"
SNAPSHOTS = ("20%", "50%", "100%")


def write_split(source_name: str, subjects: list[str], num_folds: int) -> None:
    """A splits_final.json with `num_folds` folds for the source (where nnQC_make_candidates and the QC folds
    both read it)."""
    folds = [subjects[i::num_folds] for i in range(num_folds)]
    splits = [{"train": sorted(s for j, f in enumerate(folds) if j != i for s in f), "val": sorted(folds[i])}
              for i in range(num_folds)]
    folder = os.path.join(os.environ["nnUNet_preprocessed"], source_name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "splits_final.json"), "w") as f:
        json.dump(splits, f)


def held_out_source(source: str, dataset_id: int) -> str:
    """The held-out subjects (imagesTs/labelsTs) as a raw dataset of their own, hard links only."""
    with open(os.path.join(source, "dataset.json")) as f:
        dataset_json = json.load(f)
    target = os.path.join(os.environ["nnUNet_raw"], f"Dataset{dataset_id:03d}_HeldOut")
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(target, sub), exist_ok=True)
    cases = sorted(f[:-7] for f in os.listdir(os.path.join(source, "labelsTs")))
    for case in cases:
        os.link(os.path.join(source, "labelsTs", case + ".nii.gz"), os.path.join(target, "labelsTr", case + ".nii.gz"))
        for c in range(len(dataset_json["channel_names"])):
            name = f"{case}_{c:04d}.nii.gz"
            os.link(os.path.join(source, "imagesTs", name), os.path.join(target, "imagesTr", name))
    dataset_json["numTraining"] = len(cases)
    with open(os.path.join(target, "dataset.json"), "w") as f:
        json.dump(dataset_json, f)
    return target


def evaluation_cases(candidate_folders: list[str], source: str, out: str) -> tuple[str, str, str]:
    """nnQC_predict inputs: one case per (held-out subject, snapshot folder)."""
    folders = [os.path.join(out, n) for n in ("images", "segmentations", "references")]
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    for candidates in candidate_folders:
        tag = os.path.basename(candidates)
        for file in sorted(os.listdir(candidates)):
            case = file[:-7]
            name = f"{case}_{tag}"
            os.link(os.path.join(candidates, file), os.path.join(folders[1], name + ".nii.gz"))
            os.link(os.path.join(source, "labelsTr", file), os.path.join(folders[2], name + ".nii.gz"))
            for c in range(4):
                os.link(os.path.join(source, "imagesTr", f"{case}_{c:04d}.nii.gz"),
                        os.path.join(folders[0], f"{name}_{c:04d}.nii.gz"))
    return tuple(folders)


def comparison_lines(evaluation_a: str, evaluation_b: str, repeats: int = 4000, seed: int = 0) -> list[str]:
    """Paired bootstrap over the evaluation cases (both models judged the same segmentations) of Pearson r and MAE
    of (a), (b) and their difference (b - a), 95 % percentile intervals; then, per snapshot, the mean true and
    predicted values: where the two models part."""
    a = pd.read_csv(evaluation_a).set_index("case").sort_index()
    b = pd.read_csv(evaluation_b).set_index("case").loc[a.index]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), (repeats, len(a)))
    lines = []
    for metric in ("dsc", "nsd"):
        true = a[f"true_{metric}"].to_numpy()
        predicted = (a[f"predicted_{metric}"].to_numpy(), b[f"predicted_{metric}"].to_numpy())
        figures = {"r": [], "MAE": []}
        for i in draws:
            r = [np.corrcoef(true[i], p[i])[0, 1] if np.ptp(p[i]) > 0 and np.ptp(true[i]) > 0 else np.nan
                 for p in predicted]
            mae = [np.abs(true[i] - p[i]).mean() for p in predicted]
            figures["r"].append((*r, r[1] - r[0]))
            figures["MAE"].append((*mae, mae[1] - mae[0]))
        for name, values in figures.items():
            low, high = np.nanpercentile(np.array(values), [2.5, 97.5], axis=0)
            lines.append(f"{metric.upper()} {name:<3} 95 % (paired bootstrap, {repeats}x): (a) [{low[0]:.3f}, "
                         f"{high[0]:.3f}]  (b) [{low[1]:.3f}, {high[1]:.3f}]  b - a [{low[2]:+.3f}, {high[2]:+.3f}]")
    snapshot = a.index.str.rsplit("_", n=1).str[-1]
    for tag in sorted(set(snapshot), key=lambda t: int(t.removeprefix("ep"))):
        k = snapshot == tag
        lines.append(f"{tag:>5}: n {k.sum()}, true DSC {a['true_dsc'][k].mean():.3f} predicted (a) "
                     f"{a['predicted_dsc'][k].mean():.3f} (b) {b['predicted_dsc'][k].mean():.3f}; true NSD "
                     f"{a['true_nsd'][k].mean():.3f} predicted (a) {a['predicted_nsd'][k].mean():.3f} (b) "
                     f"{b['predicted_nsd'][k].mean():.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12, help="QC training time per model")
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--held_out", type=int, default=10)
    parser.add_argument("--folds", type=int, default=3, help="folds of the segmenters on the training subjects")
    parser.add_argument("--segmenter", default=SEGMENTER, help=f"nnU-Net trainer of the segmenters ({SEGMENTER})")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 40, 48), help="phantom size (z y x), the demo's")
    parser.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="nnqc_real_candidates_")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = os.path.join(root, name)
        os.makedirs(os.environ[name], exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.evaluation.evaluate import evaluate_predictions
    from nnqc.evaluation.figures import calibration_lines
    from nnqc.experiment_planning.plan_and_preprocess import plan_and_preprocess
    from nnqc.inference.predictor import nnQCPredictor
    from nnqc.qc_data.conversion import convert_dataset
    from nnqc.run.train import get_trainer
    from nnqc.segmenters.make_candidates import make_candidates
    from nnqc.trainer_lookup import get_trainer_class

    start = time.time()
    source = write_phantom_dataset(820, "RealCandPhantom", args.subjects, "brats", shape=args.shape, seed=21,
                                   num_test=args.held_out, num_processes=2, overwrite=True, lesion_size=(0.35, 0.6))
    subjects = sorted(f[:-7] for f in os.listdir(os.path.join(source, "labelsTr")))
    write_split(os.path.basename(source), subjects, args.folds)
    segmenters = dict(trainer=args.segmenter, snapshots=SNAPSHOTS, device="cpu", num_processes=2,
                      use_mirroring=False)
    training_candidates = make_candidates(820, subsets=["T1ce", "all"], **segmenters)
    held_out = held_out_source(source, 823)
    write_split(os.path.basename(held_out), sorted(f[:-7] for f in os.listdir(os.path.join(held_out, "labelsTr"))),
                   2)
    evaluation = make_candidates(823, subsets=["FLAIR"], **segmenters)
    segmenter_minutes = (time.time() - start) / 60
    images, segs, refs = evaluation_cases(evaluation.candidate_folders, held_out, os.path.join(root, "evaluation"))

    variants = {"(a) SegGen + degradations": (821, []),
                "(b) + nnU-Net candidates": (822, training_candidates.candidate_folders)}
    rows = []
    for label, (qc_id, folders) in variants.items():
        convert_dataset(820, qc_id, candidate_folders=folders, num_seggen=3, num_degradations=12, num_processes=2,
                        verbose=False)
        plan_and_preprocess([qc_id], num_processes=2)
        os.environ["nnUNet_n_proc_DA"] = "0"
        trainer = get_trainer(qc_id, "3d_fullres", 0, time_limited(get_trainer_class("nnQCTrainer_CPUDemo"),
                                                                   args.minutes * 60), device=torch.device("cpu"))
        trainer.run_training()
        trainer.perform_actual_validation()  # out-of-fold predictions: the model's calibration
        del os.environ["nnUNet_n_proc_DA"]
        samples = len(trainer._samples_of(trainer.do_split()[0]))
        predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(os.path.dirname(trainer.output_folder), (0,))
        out = os.path.join(root, f"qc_{qc_id}")
        predictor.predict_from_files(images, segs, out)
        rows.append((label, samples, trainer.current_epoch * trainer.num_iterations_per_epoch,
                     evaluate_predictions(out, refs, verbose=False)))
    print(f"\nsegmenters: {segmenter_minutes:.1f} min; evaluation: {len(os.listdir(segs))} FLAIR-only nnU-Net "
          f"segmentations ({', '.join(os.path.basename(f) for f in evaluation.candidate_folders)}) of "
          f"{args.held_out} held-out subjects; QC training {args.minutes:.0f} min each")
    true_dsc = pd.read_csv(os.path.join(root, "qc_821", "qc_evaluation.csv"))["true_dsc"]
    print("true DSC of the evaluation segmentations: " + ", ".join(
        f"{q} {true_dsc.quantile(v):.3f}" for q, v in (("min", 0), ("q25", .25), ("median", .5), ("q75", .75),
                                                       ("max", 1))))
    print(f"{'QC training data':<28}{'samples':>8}{'iters':>7}{'DSC r':>8}{'DSC MAE':>9}{'NSD r':>8}{'NSD MAE':>9}"
          f"{'DSC_SEM':>9}")
    for label, samples, iterations, r in rows:
        print(f"{label:<28}{samples:>8}{iterations:>7}{figure(r['dsc']['r'], 8)}{figure(r['dsc']['mae'], 9)}"
              f"{figure(r['nsd']['r'], 8)}{figure(r['nsd']['mae'], 9)}{figure(r['dsc_sem'].get('mean'), 9)}")
    print()
    for line in comparison_lines(*(os.path.join(root, f"qc_{i}", "qc_evaluation.csv") for i in (821, 822))):
        print(line)
    for label, _, _, r in rows:
        print(f"\n{label}:")
        for line in calibration_lines(r):
            print(f"  {line}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
