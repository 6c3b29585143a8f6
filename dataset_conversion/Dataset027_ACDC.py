"""ACDC -> nnU-Net raw Dataset027_ACDC, one case per annotated cardiac frame (patientXXX_frameYY).

The ACDC database has training/ and testing/ folders of patientXXX/ subfolders holding patientXXX_frameYY.nii.gz
and the reference patientXXX_frameYY_gt.nii.gz (1 = RV, 2 = MYO, 3 = LV); the 4D cine and Info.cfg are not
used. training/ goes to imagesTr/labelsTr, testing/ to imagesTs and, for the frames that have a reference,
labelsTs. Files are copied byte for byte, so every geometry field is preserved exactly.

Two frames (ED, ES) of one patient are two cases: splits must group them by patient (see
`patient_of_case` and `patient_grouped_splits`), which main() writes as nnU-Net's splits_final.json.

    python -m dataset_conversion.Dataset027_ACDC -i ACDC/database/ -d 27
"""
import argparse
import os
import re
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from nnunetv2.configuration import default_num_processes

from dataset_conversion.raw_dataset_io import prepare_raw_dataset_folder, run_cases, write_dataset_json_atomic
from nnqc.atomic_files import copy_atomically, write_json_atomically
from nnqc.paths import nnUNet_preprocessed

DATASET_NAME = "ACDC"
CHANNEL_NAMES = {0: "cineMRI"}
LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
_PATIENT_FOLDER = re.compile(r"^patient\d{3}$")
_FRAME_FILE = re.compile(r"^(patient\d{3}_frame\d{2})\.nii\.gz$")


def find_acdc_cases(part_folder: str, require_reference: bool) -> list[tuple[str, str, str | None]]:
    """(case id, image file, reference file or None) for every frame under training/ or testing/."""
    patients = sorted(d for d in os.listdir(part_folder)
                      if _PATIENT_FOLDER.match(d) and os.path.isdir(os.path.join(part_folder, d)))
    if not patients:
        raise FileNotFoundError(f"no patientXXX folders in {part_folder}")
    cases = []
    for patient in patients:
        patient_folder = os.path.join(part_folder, patient)
        frames = sorted(m.group(1) for f in os.listdir(patient_folder)
                        if (m := _FRAME_FILE.match(f)) and m.group(1).startswith(patient + "_"))
        if not frames:
            raise FileNotFoundError(f"patient {patient}: no {patient}_frameYY.nii.gz in {patient_folder}")
        for case in frames:
            reference = os.path.join(patient_folder, f"{case}_gt.nii.gz")
            if not os.path.isfile(reference):
                if require_reference:
                    raise FileNotFoundError(f"case {case}: missing reference {case}_gt.nii.gz in {patient_folder}")
                reference = None
            cases.append((case, os.path.join(patient_folder, f"{case}.nii.gz"), reference))
    return cases


def check_acdc_reference(image_file: str, reference_file: str, case: str) -> None:
    """The reference must hold only ACDC labels and match its image's size."""
    reference = sitk.ReadImage(reference_file)
    values = np.unique(sitk.GetArrayViewFromImage(reference))
    unexpected = [v for v in values.tolist() if v not in LABELS.values()]
    if unexpected:
        raise ValueError(f"case {case}: unexpected label values {unexpected} in {reference_file}; ACDC uses "
                         f"{sorted(LABELS.values())}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(image_file)
    reader.ReadImageInformation()
    if reader.GetSize() != reference.GetSize():
        raise ValueError(f"case {case}: reference size {reference.GetSize()} differs from image size "
                         f"{reader.GetSize()}")


def _convert_case(case: str, image_file: str, reference_file: str | None, images_folder: str,
                  labels_folder: str) -> None:
    if reference_file is not None:
        check_acdc_reference(image_file, reference_file, case)
    copy_atomically(image_file, os.path.join(images_folder, f"{case}_0000.nii.gz"))
    if reference_file is not None:
        copy_atomically(reference_file, os.path.join(labels_folder, f"{case}.nii.gz"))


def convert_acdc(source_dir: str, dataset_id: int = 27, raw_folder: str | None = None,
                 num_processes: int = default_num_processes, overwrite: bool = False) -> str:
    """Convert the ACDC database folder (with training/ and optionally testing/); returns the raw dataset folder.

    Every training frame needs its reference; file presence is checked for all cases before anything is
    written and dataset.json is written last. `raw_folder` defaults to $nnUNet_raw. The source is only read.
    """
    training, testing = os.path.join(source_dir, "training"), os.path.join(source_dir, "testing")
    if not os.path.isdir(training):
        raise FileNotFoundError(f"{source_dir} has no training/ folder; pass the ACDC database folder that holds "
                                f"training/ and testing/")
    parts = [("Tr", find_acdc_cases(training, require_reference=True))]
    if os.path.isdir(testing):
        parts.append(("Ts", find_acdc_cases(testing, require_reference=False)))

    folder = prepare_raw_dataset_folder(dataset_id, DATASET_NAME, raw_folder, overwrite)
    jobs = []
    for part, cases in parts:
        images_folder, labels_folder = os.path.join(folder, f"images{part}"), os.path.join(folder, f"labels{part}")
        os.makedirs(images_folder)
        if any(reference is not None for _, _, reference in cases):
            os.makedirs(labels_folder)
        jobs += [(case, image, reference, images_folder, labels_folder) for case, image, reference in cases]
    run_cases(_convert_case, jobs, num_processes)
    write_dataset_json_atomic(
        folder,
        channel_names=dict(CHANNEL_NAMES),
        labels=dict(LABELS),
        num_training_cases=len(parts[0][1]),
        file_ending=".nii.gz",
        dataset_name=DATASET_NAME,
        reference="https://www.creatis.insa-lyon.fr/Challenge/acdc/",
        license="see https://www.creatis.insa-lyon.fr/Challenge/acdc/",
        converted_by="dataset_conversion.Dataset027_ACDC",
        nsd_tolerance_mm=1.0,
    )
    return folder


def patient_of_case(case: str) -> str:
    """patientXXX_frameYY -> patientXXX."""
    return case.split("_frame")[0]


def patient_grouped_splits(cases: Sequence[str], num_folds: int = 5, seed: int = 12345) -> list[dict[str, list]]:
    """nnU-Net splits_final.json content in which all frames of a patient fall in the same fold."""
    patients = np.array(sorted({patient_of_case(c) for c in cases}))
    np.random.default_rng(seed).shuffle(patients)
    splits = []
    for fold in range(num_folds):
        validation = set(patients[fold::num_folds].tolist())
        splits.append({"train": sorted(c for c in cases if patient_of_case(c) not in validation),
                       "val": sorted(c for c in cases if patient_of_case(c) in validation)})
    return splits


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert the ACDC database to an nnU-Net raw dataset.")
    parser.add_argument("-i", "--input_folder", required=True, help="ACDC folder holding training/ and testing/")
    parser.add_argument("-d", "--dataset_id", type=int, default=27)
    parser.add_argument("-np", "--num_processes", type=int, default=default_num_processes)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    args = parser.parse_args(argv)
    folder = convert_acdc(args.input_folder, args.dataset_id, num_processes=args.num_processes,
                          overwrite=args.overwrite)
    print(f"wrote {folder}")
    preprocessed = nnUNet_preprocessed()
    if preprocessed is not None:
        cases = sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(folder, "labelsTr")))
        splits_folder = os.path.join(preprocessed, os.path.basename(folder))
        os.makedirs(splits_folder, exist_ok=True)
        write_json_atomically(os.path.join(splits_folder, "splits_final.json"), patient_grouped_splits(cases))
        print(f"wrote patient-grouped splits to {splits_folder}")


if __name__ == "__main__":
    main()
