"""The raw QC dataset as preprocessing reads it: nnUNet_raw/DatasetXXX with imagesTr/, labelsTr/, candidatesTr/
and qc_targets.csv (built by nnQC_convert), and the error raised for anything in it that cannot be used."""
import os
from collections.abc import Sequence

import pandas as pd
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnqc import paths
from nnqc.qc_data.layout import CANDIDATES_FOLDER, candidate_path
from nnqc.qc_data.targets_table import TARGETS_CSV, read_targets


class QCDatasetError(RuntimeError):
    """A QC dataset that cannot be planned or preprocessed as it is; the message names the file or case."""


def resolve_dataset_name(dataset_name_or_id: int | str) -> str:
    """DatasetXXX_Name for an id or name, with an nnQC error when it cannot be found."""
    try:
        return maybe_convert_to_dataset_name(dataset_name_or_id)
    except (RuntimeError, ValueError) as e:
        raise QCDatasetError(f"Dataset {dataset_name_or_id} not found: {e}") from e


def qc_raw_folder(dataset_name: str) -> str:
    """The raw folder of a QC dataset, checked to be one (it has candidatesTr/ and qc_targets.csv)."""
    folder = join(paths.require("nnUNet_raw"), dataset_name)
    if not isdir(folder):
        raise QCDatasetError(f"Dataset {dataset_name} not found in nnUNet_raw ({folder} does not exist)")
    for name in ("dataset.json", TARGETS_CSV, CANDIDATES_FOLDER):
        if not os.path.exists(join(folder, name)):
            raise QCDatasetError(f"{dataset_name} is not an nnQC dataset: {name} is missing in {folder}. "
                                 f"Build QC datasets with nnQC_convert.")
    return folder


def read_qc_targets(raw_folder: str) -> pd.DataFrame:
    """qc_targets.csv through the one reader (nnqc.qc_data.targets_table), errors as QCDatasetError."""
    try:
        return read_targets(join(raw_folder, TARGETS_CSV))
    except (OSError, ValueError) as e:
        raise QCDatasetError(str(e)) from None


def candidates_by_subject(raw_folder: str, subjects: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """{subject: [(sample, candidate file), ...]} from qc_targets.csv, every subject and file checked."""
    targets = read_qc_targets(raw_folder)
    known = set(subjects)
    unknown = sorted(set(targets["subject"]) - known)
    if unknown:
        raise QCDatasetError(f"{join(raw_folder, TARGETS_CSV)} names subjects without images in imagesTr: "
                             f"{unknown[:5]}")
    grouped: dict[str, list[tuple[str, str]]] = {s: [] for s in subjects}
    missing = []
    for sample, subject in zip(targets["sample"], targets["subject"]):
        file = candidate_path(raw_folder, sample)
        if not isfile(file):
            missing.append(file)
        grouped[subject].append((sample, file))
    if missing:
        raise QCDatasetError(f"{len(missing)} candidate file(s) listed in {TARGETS_CSV} are missing, "
                             f"e.g. {missing[:3]}")
    return grouped
