"""Telling good from nearly good: nnQC on the segmentations real segmenters make, variant against variant.

    python benchmarks/benchmark_realistic.py --keep DIR [--variants classic boundary ...] [--iterations 25]

BraTS-like phantoms (the demo's size): 40 training subjects and 20 held-out ones (imagesTs).
  - QC training candidates: nnU-Net on the T1ce channel, 3 folds, out-of-fold snapshots at 20/50/100 % of
    nnUNetTrainer_10epochs_25iterations, plus SegGen and the degradation families of the variant.
  - Evaluation: three segmenters no QC training saw (nnU-Net on FLAIR, T1 and T2 alone, 3 folds each, trained on
    the training subjects) segment the held-out subjects at 50 % and 100 % of their training: 3 x 2 x 3 = 18
    segmentations of each of the 20 subjects, 360 in all. The 3 folds of one (segmenter, snapshot) are an
    ensemble: their mean pairwise DSC is the ensemble-agreement baseline (nnqc.metrics.agreement).
Each variant trains QCResUNet on fold 0 with one fixed schedule (nnQCTrainer_CPUDemo's, --epochs x --iterations;
classic+2x twice the iterations, to show what training length alone buys) and predicts all 360 cases, with and
without test-time mirroring. Everything is kept under --keep and resumes:
a rerun skips the segmenters, conversions and trainings that are done, so variants can be added later.
Figures (realistic_figures.py): Pearson and Spearman r, MAE, mean error above true DSC 0.85 (raw and
recalibrated), DSC_SEM, interval coverage, AURC beside optimal and random, each with a 95 % bootstrap interval
over the held-out subjects, paired against the first variant.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_learning import on_schedule  # noqa: E402
from benchmark_real_candidates import write_split  # noqa: E402
from realistic_figures import family_plot, report  # noqa: E402

SOURCE_ID = 820
SEGMENTER = "nnUNetTrainer_10epochs_25iterations"
TRAINING_SUBSETS, TRAINING_SNAPSHOTS = ["T1ce"], ("20%", "50%", "100%")
EVALUATION_SUBSETS, EVALUATION_SNAPSHOTS = ["FLAIR", "T1", "T2"], ("50%", "100%")
# name -> (degradation families, trainer, nnU-Net candidates); every trainer runs on the same fixed schedule
# (but those in SCHEDULE_FACTORS).
# nnU-Net candidates: "snapshots" (T1ce out of fold at 20/50/100 %, as nnQC_make_candidates makes them),
# "harvested" (only the final models' out-of-fold segmentations, read through nnQC_convert --nnunet_model from
# the model folder nnU-Net leaves: what a user has for free) or "none". Variants with the same families and
# candidates train on one QC dataset (the first's), so that they differ in the trainer only.
VARIANTS = {
    "classic": (["classic"], "nnQCTrainer_CPUDemo", "snapshots"),
    "boundary": (["all"], "nnQCTrainer_CPUDemo", "snapshots"),
    "boundary+pearson": (["all"], "nnQCTrainer_PearsonLoss", "snapshots"),
    "harvested": (["classic"], "nnQCTrainer_CPUDemo", "harvested"),
    "synthetic": (["classic"], "nnQCTrainer_CPUDemo", "none"),
    "boundary+margin": (["all"], "nnQCTrainer_MarginRankingLoss", "snapshots"),
    "classic+topbins": (["classic"], "nnQCTrainer_TopBins", "snapshots"),
    "classic+pearson": (["classic"], "nnQCTrainer_PearsonLoss", "snapshots"),
    "classic+margin": (["classic"], "nnQCTrainer_MarginRankingLoss", "snapshots"),
    "classic+2x": (["classic"], "nnQCTrainer_CPUDemo", "snapshots"),
}
# Variants trained off the common schedule, to see what training length alone buys: name -> factor on the
# iterations per epoch (the learning-rate decay per iteration stays). Their models live in their own results folder.
SCHEDULE_FACTORS = {"classic+2x": 2}


def qc_dataset_id(name: str) -> int:
    """The QC dataset a variant trains on: that of the first variant with its families and candidates."""
    families, _, candidates = VARIANTS[name]
    first = next(n for n, (f, _, c) in VARIANTS.items() if (f, c) == (families, candidates))
    return SOURCE_ID + 1 + list(VARIANTS).index(first)


def use_roots(root: str) -> None:
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = os.path.join(root, name)
        os.makedirs(os.environ[name], exist_ok=True)


def source_dataset(subjects: int, held_out: int) -> str:
    from dataset_conversion.phantoms import write_phantom_dataset

    folder = os.path.join(os.environ["nnUNet_raw"], f"Dataset{SOURCE_ID}_RealisticPhantom")
    if not os.path.isfile(os.path.join(folder, "dataset.json")):
        folder = write_phantom_dataset(SOURCE_ID, "RealisticPhantom", subjects, "brats", shape=(32, 40, 48),
                                       seed=21, num_test=held_out, num_processes=2, overwrite=True,
                                       lesion_size=(0.35, 0.6))
    write_split(os.path.basename(folder), sorted(f[:-7] for f in os.listdir(os.path.join(folder, "labelsTr"))), 3)
    return folder


def segmenters() -> tuple[list[str], list[str]]:
    """The QC training candidates' folders, and the evaluation segmenters' test-image folders."""
    from nnqc.segmenters.make_candidates import make_candidates

    common = dict(trainer=SEGMENTER, device="cpu", num_processes=2, use_mirroring=False)
    training = make_candidates(SOURCE_ID, subsets=TRAINING_SUBSETS, snapshots=TRAINING_SNAPSHOTS, **common)
    evaluation = make_candidates(SOURCE_ID, subsets=EVALUATION_SUBSETS, snapshots=EVALUATION_SNAPSHOTS,
                                 segment_test_images=True, **common)
    return training.candidate_folders, evaluation.test_folders


def link(source: str, target: str) -> None:
    if not os.path.exists(target):
        os.link(source, target)


def evaluation_set(source: str, test_folders: list[str], root: str) -> tuple[str, str, str, pd.DataFrame]:
    """nnQC_predict's inputs (one case per held-out subject and test folder, hard links) and, per case, its
    segmenter, snapshot, fold and the ensemble agreement of its (segmenter, snapshot)."""
    import SimpleITK as sitk

    from nnqc.metrics.agreement import dsc_to_members, mean_pairwise_dsc

    def read_labels(path: str) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(path))

    images, segmentations, references = (os.path.join(root, "evaluation", n)
                                         for n in ("images", "segmentations", "references"))
    for folder in (images, segmentations, references):
        os.makedirs(folder, exist_ok=True)
    table_file = os.path.join(root, "evaluation", "cases.csv")
    if os.path.isfile(table_file):
        return images, segmentations, references, pd.read_csv(table_file)
    subjects = sorted(f[:-7] for f in os.listdir(os.path.join(source, "labelsTs")))
    ensembles: dict[str, list[str]] = {}
    for folder in test_folders:
        ensemble, fold = os.path.basename(folder).rsplit("_fold", 1)
        ensembles.setdefault(ensemble, []).append(folder)
    rows = []
    for ensemble, folders in sorted(ensembles.items()):
        segmenter, snapshot = ensemble.rsplit("_ep", 1)
        for subject in subjects:
            members = [read_labels(os.path.join(f, subject + ".nii.gz")) for f in folders]
            agreement = mean_pairwise_dsc(members)
            for folder, member in zip(folders, members):
                fold = int(os.path.basename(folder).rsplit("_fold", 1)[1])
                case = f"{subject}__{ensemble}_f{fold}"
                link(os.path.join(folder, subject + ".nii.gz"), os.path.join(segmentations, case + ".nii.gz"))
                link(os.path.join(source, "labelsTs", subject + ".nii.gz"), os.path.join(references, case + ".nii.gz"))
                for c in range(4):
                    link(os.path.join(source, "imagesTs", f"{subject}_{c:04d}.nii.gz"),
                         os.path.join(images, f"{case}_{c:04d}.nii.gz"))
                rows.append({"case": case, "subject": subject, "segmenter": segmenter, "epoch": int(snapshot),
                             "fold": fold, "ensemble_agreement": agreement,
                             "dsc_to_other_members": dsc_to_members(member, [m for m in members
                                                                             if m is not member])})
    table = pd.DataFrame(rows)
    table.to_csv(table_file, index=False)
    return images, segmentations, references, table


def harvestable_model(training_folders: list[str], root: str) -> str:
    """The model folder nnU-Net would have left after training T1ce on the 3 folds: fold_N/validation/ holding
    the final models' out-of-fold segmentations (hard links of the last snapshot's files)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    final = max(training_folders, key=lambda f: int(f.rsplit("_ep", 1)[1]))
    model = os.path.join(root, "harvest", f"{SEGMENTER}__nnUNetPlans__3d_fullres")
    splits = load_json(os.path.join(os.environ["nnUNet_preprocessed"], f"Dataset{SOURCE_ID}_RealisticPhantom",
                                    "splits_final.json"))
    for fold, split in enumerate(splits):
        validation = os.path.join(model, f"fold_{fold}", "validation")
        os.makedirs(validation, exist_ok=True)
        for case in split["val"]:
            link(os.path.join(final, case + ".nii.gz"), os.path.join(validation, case + ".nii.gz"))
    return model


def train_variant(qc_id: int, trainer_name: str, epochs: int, iterations: int) -> tuple[str, float, int]:
    """QCResUNet on fold 0, fixed schedule; resumes; returns the model folder, training seconds, iterations."""
    from nnqc.run.train import get_trainer
    from nnqc.trainer_lookup import get_trainer_class

    fixed = type("nnQCTrainer_CPUDemo", (get_trainer_class("nnQCTrainer_CPUDemo"),),
                 {"training_minutes": None, "hyperparameters": {
                     **get_trainer_class("nnQCTrainer_CPUDemo").hyperparameters, "num_epochs": epochs,
                     "num_iterations_per_epoch": iterations, "lr_decay": 0.9 ** (iterations / 250)}})
    trainer_class = on_schedule(get_trainer_class(trainer_name), fixed) if trainer_name != fixed.__name__ else fixed
    trainer_class.training_minutes = None
    os.environ["nnUNet_n_proc_DA"] = "0"
    try:
        probe = get_trainer(qc_id, "3d_fullres", 0, trainer_class, device=torch.device("cpu"))
        folder = os.path.dirname(probe.output_folder)
        timing = os.path.join(probe.output_folder, "benchmark_training.json")
        if not os.path.isfile(os.path.join(probe.output_folder, "checkpoint_final.pth")):
            resume = os.path.isfile(os.path.join(probe.output_folder, "checkpoint_latest.pth"))
            trainer = get_trainer(qc_id, "3d_fullres", 0, trainer_class, continue_training=resume,
                                  device=torch.device("cpu"))
            if resume:
                trainer.initialize()
                trainer.load_checkpoint(os.path.join(trainer.output_folder, "checkpoint_latest.pth"))
            start = time.time()
            trainer.run_training()
            trainer.perform_actual_validation()  # out-of-fold predictions: the model's calibration
            with open(timing, "w") as f:
                json.dump({"seconds": time.time() - start, "resumed": resume,
                           "iterations": trainer.current_epoch * trainer.num_iterations_per_epoch}, f)
    finally:
        del os.environ["nnUNet_n_proc_DA"]
    with open(timing) as f:
        record = json.load(f)
    return folder, record["seconds"], record["iterations"]


def run_variant(name: str, qc_id: int, training_folders: list[str], inputs: tuple[str, str, str], root: str,
                epochs: int, iterations: int, with_tta: bool = True) -> dict:
    from nnqc.evaluation.evaluate import evaluate_predictions
    from nnqc.experiment_planning.plan_and_preprocess import plan_and_preprocess
    from nnqc.inference.predictor import nnQCPredictor
    from nnqc.qc_data.conversion import convert_dataset

    families, trainer_name, candidates = VARIANTS[name]
    convert_dataset(SOURCE_ID, qc_id, candidate_folders=training_folders if candidates == "snapshots" else (),
                    num_seggen=3, num_degradations=12, num_processes=2, verbose=False, families=families,
                    nnunet_models=[harvestable_model(training_folders, root)] if candidates == "harvested" else ())
    preprocessed = os.path.join(root, "variants", f"preprocessed_{qc_id}.done")
    if not os.path.isfile(preprocessed):  # a variant sharing the QC dataset reuses its preprocessing
        plan_and_preprocess([qc_id], num_processes=2)
        os.makedirs(os.path.dirname(preprocessed), exist_ok=True)
        open(preprocessed, "w").close()
    factor = SCHEDULE_FACTORS.get(name, 1)
    results = os.environ["nnUNet_results"]
    if factor != 1:  # same trainer, same QC dataset: only a results folder of its own keeps the models apart
        os.environ["nnUNet_results"] = os.path.join(root, f"nnUNet_results_{factor}x")
    try:
        model_folder, seconds, done_iterations = train_variant(qc_id, trainer_name, epochs, iterations * factor)
    finally:
        os.environ["nnUNet_results"] = results
    outputs = {}
    for tta in (False, True) if with_tta else (False,):
        out = os.path.join(root, "variants", name + ("+tta" if tta else ""))
        if not os.path.isfile(os.path.join(out, "qc_evaluation.csv")):
            predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False, use_mirroring=tta)
            predictor.initialize_from_trained_model_folder(model_folder, (0,))
            start = time.time()
            predictor.predict_from_files(*inputs[:2], out, continue_prediction=True)
            with open(os.path.join(out, "benchmark_predict.json"), "w") as f:
                json.dump({"seconds": time.time() - start}, f)
            evaluate_predictions(out, inputs[2], verbose=False)
        outputs[name + ("+tta" if tta else "")] = out
    return {"outputs": outputs, "training_seconds": seconds, "iterations": done_iterations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", required=True, help="work folder (kept; a rerun resumes in it)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--tta_variants", nargs="*", default=None, choices=list(VARIANTS),
                        help="variants also predicted with test-time mirroring (default: all; 8 x the prediction time)")
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=25, help="training iterations per epoch")
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--held_out", type=int, default=20)
    parser.add_argument("--report_only", action="store_true", help="only print the figures of finished variants")
    args = parser.parse_args()
    root = os.path.abspath(args.keep)
    use_roots(root)
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.time()
    source = source_dataset(args.subjects, args.held_out)
    if not args.report_only:
        training_folders, test_folders = segmenters()
        print(f"segmenters ready after {(time.time() - start) / 60:.1f} min", flush=True)
        inputs = evaluation_set(source, test_folders, root)
        try:
            family_plot(source, inputs[3], root)
        except Exception as e:  # the plot must not cost the variants' hours: said, and the run goes on
            print(f"family plot failed: {type(e).__name__}: {e}", flush=True)
        for name in args.variants:
            result = run_variant(name, qc_dataset_id(name), training_folders, inputs[:3],
                                 root, args.epochs, args.iterations,
                                 args.tta_variants is None or name in args.tta_variants)
            print(f"{name}: trained {result['iterations']} iterations in {result['training_seconds'] / 60:.1f} min",
                  flush=True)
    cases = pd.read_csv(os.path.join(root, "evaluation", "cases.csv"))
    for line in report(root, cases):
        print(line)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
