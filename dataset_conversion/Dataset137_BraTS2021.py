"""BraTS 2021 training data -> nnU-Net raw Dataset137_BraTS2021 (region-based, nnU-Net's BraTS convention).

The source folder holds BraTS2021_XXXXX/ subfolders with BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz and
BraTS labels 1 = necrosis, 2 = edema, 4 = enhancing. Images are copied byte for byte (geometry preserved
exactly); the segmentation is relabelled to edema 1, necrosis 2, enhancing 3 so that the regions whole tumour
{1,2,3}, tumour core {2,3} and enhancing tumour {3} are nested as nnU-Net's region training expects.

    python -m dataset_conversion.Dataset137_BraTS2021 -i RSNA_ASNR_MICCAI_BraTS2021_TrainingData/ -d 137
"""
import argparse
import os
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from nnunetv2.configuration import default_num_processes

from dataset_conversion.raw_dataset_io import prepare_raw_dataset_folder, run_cases, write_dataset_json_atomic
from nnqc.atomic_files import copy_atomically, write_image_atomically

DATASET_NAME = "BraTS2021"
CASE_PREFIX = "BraTS2021_"
# source file suffix -> nnU-Net channel index
MODALITIES = ("t1", "t1ce", "t2", "flair")
CHANNEL_NAMES = {0: "T1", 1: "T1ce", 2: "T2", 3: "FLAIR"}
LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
REGIONS_CLASS_ORDER = (1, 2, 3)
# BraTS label -> nnU-Net label: necrosis 1 -> 2, edema 2 -> 1, enhancing 4 -> 3
BRATS_TO_NNUNET = {0: 0, 1: 2, 2: 1, 4: 3}


def find_brats_cases(source_dir: str) -> list[str]:
    """Case ids (subfolder names) in a BraTS 2021 training folder, checking that every case is complete."""
    if not os.path.isdir(source_dir):
        raise FileNotFoundError(f"BraTS 2021 source folder {source_dir} does not exist")
    cases = sorted(d for d in os.listdir(source_dir)
                   if d.startswith(CASE_PREFIX) and os.path.isdir(os.path.join(source_dir, d)))
    if not cases:
        raise FileNotFoundError(f"no {CASE_PREFIX}XXXXX case folders in {source_dir}; pass the folder that holds "
                                f"them (the BraTS 2021 training data folder)")
    for case in cases:
        missing = [f"{case}_{suffix}.nii.gz" for suffix in (*MODALITIES, "seg")
                   if not os.path.isfile(os.path.join(source_dir, case, f"{case}_{suffix}.nii.gz"))]
        if missing:
            raise FileNotFoundError(f"case {case}: missing {', '.join(missing)} in {os.path.join(source_dir, case)}")
    return cases


def brats_to_nnunet_labels(seg: np.ndarray, case: str = "") -> np.ndarray:
    """Relabel a BraTS segmentation to nnU-Net's convention (uint8); clear error on any other value."""
    values = np.unique(seg)
    unexpected = [v for v in values.tolist() if v not in BRATS_TO_NNUNET]
    if unexpected:
        raise ValueError(f"case {case}: unexpected label values {unexpected} in the segmentation; BraTS 2021 "
                         f"uses {sorted(BRATS_TO_NNUNET)}")
    lookup = np.zeros(max(BRATS_TO_NNUNET) + 1, dtype=np.uint8)
    for brats_label, nnunet_label in BRATS_TO_NNUNET.items():
        lookup[brats_label] = nnunet_label
    return lookup[seg.astype(np.int64)]


def _convert_case(case_folder: str, case: str, images_folder: str, labels_folder: str) -> None:
    seg_file = os.path.join(case_folder, f"{case}_seg.nii.gz")
    seg_image = sitk.ReadImage(seg_file)
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.path.join(case_folder, f"{case}_t1.nii.gz"))
    reader.ReadImageInformation()
    if reader.GetSize() != seg_image.GetSize():
        raise ValueError(f"case {case}: segmentation size {seg_image.GetSize()} differs from the T1 image size "
                         f"{reader.GetSize()}")
    relabelled = sitk.GetImageFromArray(brats_to_nnunet_labels(sitk.GetArrayFromImage(seg_image), case))
    relabelled.CopyInformation(seg_image)
    for channel, modality in enumerate(MODALITIES):
        copy_atomically(os.path.join(case_folder, f"{case}_{modality}.nii.gz"),
                         os.path.join(images_folder, f"{case}_{channel:04d}.nii.gz"))
    write_image_atomically(relabelled, os.path.join(labels_folder, f"{case}.nii.gz"))


def convert_brats2021(source_dir: str, dataset_id: int = 137, raw_folder: str | None = None,
                      num_processes: int = default_num_processes, overwrite: bool = False) -> str:
    """Convert the BraTS 2021 training folder; returns the nnU-Net raw dataset folder.

    All cases are checked for completeness before anything is written; dataset.json is written last.
    `raw_folder` defaults to $nnUNet_raw. The source folder is only read.
    """
    cases = find_brats_cases(source_dir)
    folder = prepare_raw_dataset_folder(dataset_id, DATASET_NAME, raw_folder, overwrite)
    images_folder, labels_folder = os.path.join(folder, "imagesTr"), os.path.join(folder, "labelsTr")
    os.makedirs(images_folder, exist_ok=True)
    os.makedirs(labels_folder, exist_ok=True)
    run_cases(_convert_case, [(os.path.join(source_dir, c), c, images_folder, labels_folder) for c in cases],
              num_processes)
    write_dataset_json_atomic(
        folder,
        channel_names=dict(CHANNEL_NAMES),
        labels=dict(LABELS),
        num_training_cases=len(cases),
        file_ending=".nii.gz",
        regions_class_order=REGIONS_CLASS_ORDER,
        dataset_name=DATASET_NAME,
        reference="https://www.synapse.org/#!Synapse:syn25829067/wiki/610863",
        license="see https://www.synapse.org/#!Synapse:syn25829067/wiki/610863",
        converted_by="dataset_conversion.Dataset137_BraTS2021",
        nsd_tolerance_mm=1.0,
    )
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert the BraTS 2021 training data to an nnU-Net raw dataset.")
    parser.add_argument("-i", "--input_folder", required=True,
                        help="folder holding the BraTS2021_XXXXX case folders")
    parser.add_argument("-d", "--dataset_id", type=int, default=137)
    parser.add_argument("-np", "--num_processes", type=int, default=default_num_processes)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    args = parser.parse_args(argv)
    folder = convert_brats2021(args.input_folder, args.dataset_id, num_processes=args.num_processes,
                               overwrite=args.overwrite)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
