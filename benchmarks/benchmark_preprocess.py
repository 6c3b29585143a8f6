"""Time nnQC preprocessing at BraTS size and measure what a preprocessed candidate costs on disk.

Run: python benchmarks/benchmark_preprocess.py [--subjects 3] [--candidates 10]
Writes a QC dataset of BraTS-like phantoms (4 channels, 240 x 240 x 155 at 1 mm) to a temporary folder, fingerprints
and plans it, then prints the seconds per subject (read, crop, normalize, resample, write in nnU-Net's
format), the seconds per candidate (read, crop, resample, write), the seconds per subject to fingerprint its
inputs (size and SHA-256 of the compressed files, what reruns compare to decide what is up to date) and the
median bytes of a preprocessed candidate (target: at most 100 kB).
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

BRATS_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}


def candidate_of(reference: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
    """A degraded copy of the reference: shifted, eroded or dilated, with a region dropped or relabelled."""
    candidate = np.roll(reference, tuple(rng.integers(-6, 7, 3)), axis=(0, 1, 2))
    iterations = int(rng.integers(1, 4))
    if k % 3 == 1:
        candidate = np.where(ndimage.binary_erosion(candidate > 0, iterations=iterations), candidate, 0)
    elif k % 3 == 2:
        grown = ndimage.grey_dilation(candidate, size=(2 * iterations + 1,) * 3)
        candidate = np.where(candidate > 0, candidate, grown)
    if k % 4 == 3:
        candidate[candidate == rng.integers(1, 4)] = rng.integers(0, 4)
    return candidate.astype(np.uint8)


def write_dataset(raw: str, dataset_name: str, num_subjects: int, num_candidates: int, seed: int) -> None:
    from dataset_conversion.phantoms import make_brats_phantom
    from nnqc.metrics.dice import multiclass_dice

    folder = os.path.join(raw, dataset_name)
    for sub in ("imagesTr", "labelsTr", "candidatesTr"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    rng = np.random.default_rng(seed)

    def write(array: np.ndarray, file: str) -> None:
        sitk.WriteImage(sitk.GetImageFromArray(array), os.path.join(folder, file), useCompression=True)

    rows = []
    for i in range(num_subjects):
        subject = f"BraTS_{i:05d}"
        images, seg = make_brats_phantom(rng=rng)
        for c, image in enumerate(images):
            write(image.astype(np.int16), f"imagesTr/{subject}_{c:04d}.nii.gz")
        write(seg, f"labelsTr/{subject}.nii.gz")
        for k in range(num_candidates):
            sample = f"{subject}__degrade__{k:03d}"
            candidate = candidate_of(seg, rng, k)
            write(candidate, f"candidatesTr/{sample}.nii.gz")
            rows.append({"sample": sample, "subject": subject, "source": "degrade", "generator": "benchmark",
                         "seed": k, "dsc": multiclass_dice(seg, candidate), "nsd": np.nan})
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}, "labels": BRATS_LABELS,
                   "regions_class_order": [1, 2, 3], "numTraining": num_subjects, "file_ending": ".nii.gz"}, f)
    pd.DataFrame(rows).sort_values("sample").to_csv(os.path.join(folder, "qc_targets.csv"), index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=10, help="candidates per subject")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as base:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            os.environ[name] = os.path.join(base, name)
            os.makedirs(os.environ[name])
        from batchgenerators.utilities.file_and_folder_operations import load_json
        from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
            DatasetFingerprintExtractor,
        )
        from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

        from nnqc.experiment_planning.plan_and_preprocess import extract_fingerprint, plan
        from nnqc.preprocessing.plans_manager import nnQCPlansManager
        from nnqc.preprocessing.preprocessor import (
            PREPROCESSED_CANDIDATES_FOLDER,
            input_fingerprint,
            nnQCPreprocessor,
        )
        from nnqc.preprocessing.qc_dataset import candidates_by_subject

        class LargeDatasetSampling(DatasetFingerprintExtractor):
            """nnU-Net spreads 1e8 sampled intensities over the subjects: sample per subject as for 1000."""

            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self.num_foreground_voxels_for_intensitystats = 1e8 / 1000 * len(self.dataset)

        dataset_name = "Dataset990_BenchmarkQC"
        start = time.perf_counter()
        write_dataset(os.environ["nnUNet_raw"], dataset_name, args.subjects, args.candidates, args.seed)
        print(f"wrote {args.subjects} subjects x {args.candidates} candidates in {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        extract_fingerprint(dataset_name, num_processes=1, fingerprint_extractor_class=LargeDatasetSampling)
        fingerprint_seconds = time.perf_counter() - start
        start = time.perf_counter()
        plans = plan(dataset_name)
        print(f"fingerprint: {fingerprint_seconds / args.subjects:.2f} s per subject, "
              f"plan: {time.perf_counter() - start:.1f} s, input shape "
              f"{plans['configurations']['3d_fullres']['patch_size']}, strides "
              f"{plans['configurations']['3d_fullres']['architecture']['arch_kwargs']['strides']}")

        raw = os.path.join(os.environ["nnUNet_raw"], dataset_name)
        preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], dataset_name)
        plans_manager = nnQCPlansManager(os.path.join(preprocessed, "nnQCPlans.json"))
        configuration_manager = plans_manager.get_configuration("3d_fullres")
        dataset_json = load_json(os.path.join(preprocessed, "dataset.json"))
        dataset = get_filenames_of_train_images_and_targets(raw, dataset_json)
        candidates = candidates_by_subject(raw, sorted(dataset))
        output = os.path.join(preprocessed, configuration_manager.data_identifier)
        os.makedirs(os.path.join(output, PREPROCESSED_CANDIDATES_FOLDER))
        preprocessor = nnQCPreprocessor()

        subject_seconds, candidate_seconds, fingerprint_seconds, input_bytes = [], [], [], []
        for subject in sorted(dataset):
            inputs = [*dataset[subject]["images"], dataset[subject]["label"]]
            start = time.perf_counter()
            for f in inputs:
                input_fingerprint(f)
            fingerprint_seconds.append(time.perf_counter() - start)
            input_bytes.append(sum(os.path.getsize(f) for f in inputs))
            job = [output, subject, dataset[subject]["images"], dataset[subject]["label"], [], plans_manager,
                   configuration_manager, dataset_json, ()]
            start = time.perf_counter()
            preprocessor.run_subject(*job)  # the subject alone
            subject_seconds.append(time.perf_counter() - start)
            job[4] = candidates[subject]
            start = time.perf_counter()
            preprocessor.run_subject(*job)  # the subject is up to date: only its candidates are processed
            candidate_seconds.append((time.perf_counter() - start) / len(candidates[subject]))

        folder = os.path.join(output, PREPROCESSED_CANDIDATES_FOLDER)
        sizes = [os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)]
        subject_bytes = [os.path.getsize(os.path.join(output, f)) for f in os.listdir(output) if "." in f]
        print(f"seconds per subject:   {np.mean(subject_seconds):.2f} (n={len(subject_seconds)})")
        print(f"seconds per candidate: {np.mean(candidate_seconds):.3f} (n={len(sizes)})")
        print(f"seconds per subject to fingerprint its inputs: {np.mean(fingerprint_seconds):.3f} "
              f"({np.mean(input_bytes) / 1e6:.1f} MB of compressed images and reference)")
        print(f"bytes per candidate:   median {np.median(sizes) / 1e3:.1f} kB, max {max(sizes) / 1e3:.1f} kB "
              f"(target <= 100 kB)")
        print(f"bytes per subject:     {sum(subject_bytes) / len(dataset) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
