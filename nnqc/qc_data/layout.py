"""The layout of a raw QC dataset: nnU-Net's folders plus candidatesTr/, the progress folder and the table."""
import os

from nnqc.qc_data.targets_table import TARGETS_CSV

IMAGES_FOLDER = "imagesTr"
LABELS_FOLDER = "labelsTr"
CANDIDATES_FOLDER = "candidatesTr"
PROGRESS_FOLDER = "qc_progress"
SETTINGS_JSON = "settings.json"
HISTOGRAM_PNG = "qc_dsc_histogram.png"
DATASET_JSON = "dataset.json"
# candidates are compressed NIfTI whatever the source's file ending (the QC dataset format fixes it)
CANDIDATE_FILE_ENDING = ".nii.gz"
QC_DATASET_ENTRIES = (DATASET_JSON, IMAGES_FOLDER, LABELS_FOLDER, CANDIDATES_FOLDER, PROGRESS_FOLDER,
                      TARGETS_CSV, HISTOGRAM_PNG)


def image_file_name(subject: str, channel: int, file_ending: str) -> str:
    return f"{subject}_{channel:04d}{file_ending}"


def candidate_path(folder: str, sample: str) -> str:
    return os.path.join(folder, CANDIDATES_FOLDER, sample + CANDIDATE_FILE_ENDING)
