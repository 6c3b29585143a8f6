"""nnQC end to end on synthetic BraTS-like phantoms, on a CPU, with the same commands a user runs.

phantom source dataset -> nnQC_convert -> nnQC_plan_and_preprocess -> nnQC_train (short CPU schedule)
-> nnQC_predict on held-out cases with segmentations from good to poor -> nnQC_evaluate + HTML report.

Uses nnUNet_raw / nnUNet_preprocessed / nnUNet_results when they are set, ./nnqc_demo_data otherwise. Rerunning
resumes: finished steps are skipped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import SimpleITK as sitk

from nnqc.training.time_budget import read_schedule

SOURCE_ID, QC_ID = 500, 501
SOURCE_NAME = "DemoPhantom"
TRAINER = "nnQCTrainer_CPUDemo"
# 32 epochs x 50 iterations: the shortest schedule measured to give the demo's model DSC r > 0.9 (0.935 in fp32)
WELL_TRAINED_ITERATIONS = 1600
# segmentations of each held-out case, from good to poor: (family, seed offset); "reference" = the truth
HELD_OUT_SEGMENTATIONS = (("reference", 0), ("erode_dilate", 1), ("seggen", 2), ("false_positive_blobs", 3),
                          ("drop_region", 4), ("swap_labels", 5), ("slice_errors", 6))


def step(title: str) -> float:
    print(f"\n===== {title} =====", flush=True)
    return time.time()


def run(*command: str, env: dict | None = None) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env={**os.environ, **(env or {})})


def short_training_note(schedule, root: str, model_folder: str, user_folders: bool) -> list[str]:
    """Says so when this CPU fit fewer iterations than the demo's model needs to rank its cases well, and how long
    a run that does would train (a resumed training keeps its schedule: a new demo folder, or, in the user's own
    nnU-Net folders, the model folder removed first)."""
    iterations = schedule.num_epochs * schedule.num_iterations_per_epoch
    if iterations >= WELL_TRAINED_ITERATIONS:
        return []
    minutes = math.ceil(schedule.projected_seconds / iterations * WELL_TRAINED_ITERATIONS / 60)
    return [f"note: this CPU fit {iterations} training iterations in the budget; the figures above are those of an "
            f"undertrained model (the demo's model ranked its cases with DSC r > 0.9 from {WELL_TRAINED_ITERATIONS} "
            f"iterations on). For those: " + (f"remove {model_folder}, then ./run_demo.sh --training_minutes {minutes}"
                                               if user_folders else
                                               f"./run_demo.sh --root {root}_long --training_minutes {minutes}")]


def folders(root: str) -> dict:
    """nnU-Net's folders: the user's when set, else under `root`."""
    env = {}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = os.environ.get(name) or os.path.join(root, name)
        os.makedirs(env[name], exist_ok=True)
    return env


def make_held_out_cases(source_folder: str, out_folder: str, seed: int) -> tuple[str, str, str]:
    """Images, segmentations and references of the held-out phantoms, several segmentations per case
    (images linked under a new case name for each)."""
    from nnqc.metrics.regions import allowed_labels, get_regions
    from nnqc.qc_data.generators import generate_candidate
    from nnqc.qc_data.view import read_subject_view

    images, segs, refs = (os.path.join(out_folder, n) for n in ("imagesTs", "segmentations", "references"))
    for folder in (images, segs, refs):
        os.makedirs(folder, exist_ok=True)
    with open(os.path.join(source_folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    _, regions = get_regions(dataset_json)
    labels = allowed_labels(dataset_json)
    cases = sorted(f[:-7] for f in os.listdir(os.path.join(source_folder, "labelsTs")) if f.endswith(".nii.gz"))
    for i, case in enumerate(cases):
        reference = sitk.ReadImage(os.path.join(source_folder, "labelsTs", case + ".nii.gz"))
        ref_array = sitk.GetArrayFromImage(reference)
        spacing = reference.GetSpacing()[::-1]
        # candidates stay inside the images' non-zero box, as nnQC_convert's do: a segmenter's output, not one the
        # network cannot see (nnQC_predict would name such a case a partial view)
        view = read_subject_view([os.path.join(source_folder, "imagesTs", f"{case}_{c:04d}.nii.gz")
                                  for c in range(4)])
        for family, offset in HELD_OUT_SEGMENTATIONS:
            name = f"{case}_{family}"
            if os.path.isfile(os.path.join(segs, name + ".nii.gz")):
                continue
            for c in range(4):
                target = os.path.join(images, f"{name}_{c:04d}.nii.gz")
                if not os.path.exists(target):
                    os.link(os.path.join(source_folder, "imagesTs", f"{case}_{c:04d}.nii.gz"), target)
            shutil.copyfile(os.path.join(source_folder, "labelsTs", case + ".nii.gz"),
                            os.path.join(refs, name + ".nii.gz"))
            candidate = ref_array if family == "reference" else generate_candidate(
                family, ref_array, seed + 1000 * i + offset, spacing, labels, regions, view)
            image = sitk.GetImageFromArray(candidate.astype(np.uint8))
            image.CopyInformation(reference)
            sitk.WriteImage(image, os.path.join(segs, name + ".nii.gz"), True)
    return images, segs, refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="nnqc_demo_data", help="demo folder when nnUNet_* are not set")
    parser.add_argument("--subjects", type=int, default=40, help="training subjects (phantoms)")
    parser.add_argument("--held_out", type=int, default=8, help="held-out phantom cases")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 40, 48),
                        help="phantom size (z y x); small, so that training sees enough iterations on a CPU: "
                             "the brains fit the input 32x32x32, whose deepest feature maps are 4x4x4")
    parser.add_argument("--lesion_size", type=float, nargs=2, default=(0.35, 0.6),
                        help="lesion radius range as a fraction of the brain radius: larger than BraTS's so that "
                             "phantoms this small carry enough error voxels for a short training")
    parser.add_argument("--training_minutes", type=float, default=12.0,
                        help="the training's time budget: the trainer times its own step and takes as many "
                             "iterations per epoch (20 to 100) as fit, so that the demo takes about as long on a CPU "
                             "with native bf16 as on one without")
    parser.add_argument("-np", type=int, default=2, help="processes for conversion and preprocessing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    user_folders = any(os.environ.get(name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
    env = folders(os.path.abspath(args.root))
    os.environ.update(env)
    demo_folder = os.path.join(os.path.abspath(args.root), "held_out")
    from dataset_conversion.phantoms import write_phantom_dataset

    t = step("1/6 synthetic BraTS-like source dataset (nnU-Net raw format)")
    source = os.path.join(env["nnUNet_raw"], f"Dataset{SOURCE_ID:03d}_{SOURCE_NAME}")
    if not os.path.isfile(os.path.join(source, "dataset.json")):
        source = write_phantom_dataset(SOURCE_ID, SOURCE_NAME, args.subjects, "brats", shape=args.shape,
                                       seed=args.seed, num_test=args.held_out, num_processes=args.np,
                                       oblique=True, overwrite=True, lesion_size=args.lesion_size)
    print(f"{source} ({time.time() - t:.0f} s)")

    t = step("2/6 nnQC_convert: QC training data with DSC/NSD targets")
    run("nnQC_convert", "-s", str(SOURCE_ID), "-d", str(QC_ID), "--seggen", "3", "--degradations", "12",
        "-np", str(args.np), "--seed", str(args.seed))
    print(f"({time.time() - t:.0f} s)")

    t = step("3/6 nnQC_plan_and_preprocess")
    run("nnQC_plan_and_preprocess", "-d", str(QC_ID), "-np", str(args.np))
    print(f"({time.time() - t:.0f} s)")

    t = step(f"4/6 nnQC_train ({TRAINER}, fold 0, CPU, {args.training_minutes:g} min budget)")
    from nnqc.cpu_features import cpu_has_native_bf16
    from nnqc.training.precision import describe_precision

    # what nnQCTrainer_CPUDemo will compute in: its defaults on a CPU device
    print(f"precision: {describe_precision('cpu', True, True, cpu_has_native_bf16())}")
    model = os.path.join(env["nnUNet_results"], f"Dataset{QC_ID}_{SOURCE_NAME}QC",
                         f"{TRAINER}__nnQCPlans__3d_fullres", "fold_0")
    if not os.path.isfile(os.path.join(model, "checkpoint_final.pth")):
        # data augmentation in-process: on 2 cores a separate worker only competes with training
        run("nnQC_train", str(QC_ID), "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu",
            *(["--c"] if os.path.isdir(model) else []),
            env={"nnUNet_n_proc_DA": "0", "nnQC_training_minutes": str(args.training_minutes)})
    schedule = read_schedule(model)
    print(f"({time.time() - t:.0f} s)")

    t = step("5/6 nnQC_predict on held-out cases, segmentations from good to poor")
    images, segs, refs = make_held_out_cases(source, demo_folder, args.seed)
    qc_out = os.path.join(demo_folder, "qc_out")
    run("nnQC_predict", "-i", images, "-s", segs, "-o", qc_out, "-d", str(QC_ID), "-f", "0", "-tr", TRAINER,
        "-device", "cpu", "--continue_prediction", "--report")
    print(f"({time.time() - t:.0f} s)")

    t = step("6/6 nnQC_evaluate against the references")
    run("nnQC_evaluate", "-o", qc_out, "-ref", refs)
    with open(os.path.join(qc_out, "qc_evaluation.json")) as f:
        evaluation = json.load(f)
    print(f"({time.time() - t:.0f} s)")
    dsc, nsd, sem = evaluation["dsc"], evaluation["nsd"], evaluation["dsc_sem"]
    print(f"\nnnQC demo done in {(time.time() - start) / 60:.1f} min on {evaluation['num_cases']} held-out "
          f"segmentations:")
    print(f"  DSC  Pearson r {dsc['r']:.3f}   MAE {dsc['mae']:.3f} ± {dsc['mae_sd']:.3f}")
    print(f"  NSD  Pearson r {nsd['r']:.3f}   MAE {nsd['mae']:.3f} ± {nsd['mae_sd']:.3f}")
    print(f"  DSC_SEM (mean over regions) {sem['mean']:.3f}")
    if schedule is not None:
        print(f"  {schedule.describe()}")
        for line in short_training_note(schedule, args.root, os.path.dirname(model), user_folders):
            print(f"  {line}")
    # calibrated decisions: interval coverage and width, AURC beside the optimal and a random ranking, decision
    # counts, the bias on good segmentations before and after recalibration
    from nnqc.evaluation.figures import calibration_lines

    for line in calibration_lines(evaluation):
        print(f"  {line}")
    print(f"  report: {os.path.join(qc_out, 'qc_report.html')}")


if __name__ == "__main__":
    sys.exit(main())
