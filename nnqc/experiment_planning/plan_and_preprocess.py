"""Fingerprint, plan and preprocess QC datasets with nnU-Net's machinery, passing nnQC's classes as objects."""
import os
from collections.abc import Sequence

import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnqc import paths
from nnqc.experiment_planning.planner import DEFAULT_PLANS_NAME, QC_CONFIGURATION, nnQCPlanner
from nnqc.geometry import image_mismatch
from nnqc.preprocessing.preprocessor import nnQCPreprocessor
from nnqc.preprocessing.qc_dataset import QCDatasetError, candidates_by_subject, qc_raw_folder, resolve_dataset_name


def default_num_processes() -> int:
    """nnUNet_def_n_proc when set (read now, not at import), else nnU-Net's 8 capped by the CPU count."""
    value = os.environ.get("nnUNet_def_n_proc")
    return int(value) if value else min(8, os.cpu_count() or 1)


def check_qc_dataset(dataset_name_or_id: int | str, verify_candidate_geometry: bool = False) -> str:
    """Fail early, naming the file, when a QC dataset is incomplete; returns its name.

    Checks the layout, qc_targets.csv and that every listed candidate exists; with
    `verify_candidate_geometry`, also that each candidate's header matches its reference's voxel grid.
    """
    dataset_name = resolve_dataset_name(dataset_name_or_id)
    raw_folder = qc_raw_folder(dataset_name)
    dataset_json = load_json(join(raw_folder, "dataset.json"))
    dataset = get_filenames_of_train_images_and_targets(raw_folder, dataset_json)
    if not dataset:
        raise QCDatasetError(f"{dataset_name} has no subjects in imagesTr")
    candidates = candidates_by_subject(raw_folder, sorted(dataset))
    if verify_candidate_geometry:
        for subject, samples in tqdm(candidates.items(), desc="Checking candidate geometry"):
            reference = _header(dataset[subject]["label"])
            for _, file in samples:
                mismatch = image_mismatch(_header(file), reference)
                if mismatch:
                    raise QCDatasetError(f"Candidate {file} does not match the geometry of its reference "
                                         f"{dataset[subject]['label']}: {mismatch}")
    return dataset_name


def _header(file: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.ReadImageInformation()
    return reader


def extract_fingerprint(dataset_name_or_id: int | str, num_processes: int | None = None,
                        check_dataset_integrity: bool = False, clean: bool = False, verbose: bool = False,
                        fingerprint_extractor_class: type[DatasetFingerprintExtractor] = DatasetFingerprintExtractor
                        ) -> dict:
    """nnU-Net's dataset fingerprint of the subjects (imagesTr/labelsTr; candidates are not part of it).

    An existing fingerprint is reused unless `clean`, or unless it covers another number of subjects.
    """
    num_processes = num_processes or default_num_processes()
    dataset_name = check_qc_dataset(dataset_name_or_id, verify_candidate_geometry=check_dataset_integrity)
    if check_dataset_integrity:
        verify_dataset_integrity(join(paths.require("nnUNet_raw"), dataset_name), num_processes)
    extractor = fingerprint_extractor_class(dataset_name, num_processes, verbose=verbose)
    fingerprint_file = join(paths.require("nnUNet_preprocessed"), dataset_name, "dataset_fingerprint.json")
    stale = os.path.isfile(fingerprint_file) and \
        len(load_json(fingerprint_file)["spacings"]) != len(extractor.dataset)
    if stale:
        print(f"The fingerprint of {dataset_name} covers another set of subjects: extracting it again")
    return extractor.run(overwrite_existing=clean or stale)


def plan(dataset_name_or_id: int | str, planner_class: type[nnQCPlanner] = nnQCPlanner,
         plans_name: str = DEFAULT_PLANS_NAME, overwrite_target_spacing: Sequence[float] | None = None) -> dict:
    """Write <plans_name>.json (3d_fullres only) with `planner_class`; returns the plans."""
    dataset_name = resolve_dataset_name(dataset_name_or_id)
    planner = planner_class(dataset_name, plans_name=plans_name,
                            overwrite_target_spacing=None if overwrite_target_spacing is None
                            else [float(i) for i in overwrite_target_spacing])
    return planner.plan_experiment()


def preprocess(dataset_name_or_id: int | str, plans_identifier: str = DEFAULT_PLANS_NAME,
               configurations: Sequence[str] = (QC_CONFIGURATION,), num_processes: int | None = None,
               clean: bool = False, verbose: bool = False, show_progress_bar: bool = True,
               preprocessor_class: type[nnQCPreprocessor] = nnQCPreprocessor) -> None:
    """Preprocess subjects and candidates; work already done is skipped unless `clean`."""
    _check_configurations(configurations)
    preprocessor = preprocessor_class(verbose=verbose)
    preprocessor.show_progress_bar = show_progress_bar
    for configuration in configurations:
        preprocessor.run(dataset_name_or_id, configuration, plans_identifier,
                         num_processes or default_num_processes(), clean=clean)


def plan_and_preprocess(dataset_names_or_ids: Sequence[int | str],
                        configurations: Sequence[str] = (QC_CONFIGURATION,), num_processes: int | None = None,
                        check_dataset_integrity: bool = False, clean: bool = False, no_pp: bool = False,
                        verbose: bool = False, plans_name: str = DEFAULT_PLANS_NAME,
                        fingerprint_extractor_class: type[DatasetFingerprintExtractor] = DatasetFingerprintExtractor,
                        planner_class: type[nnQCPlanner] = nnQCPlanner,
                        preprocessor_class: type[nnQCPreprocessor] = nnQCPreprocessor) -> None:
    """What nnQC_plan_and_preprocess does, for each dataset in turn."""
    _check_configurations(configurations)
    for dataset in dataset_names_or_ids:
        print(f"Fingerprint extraction: {dataset}")
        extract_fingerprint(dataset, num_processes, check_dataset_integrity, clean, verbose,
                            fingerprint_extractor_class=fingerprint_extractor_class)
        print(f"Experiment planning: {dataset}")
        plan(dataset, planner_class=planner_class, plans_name=plans_name)
        if not no_pp:
            preprocess(dataset, plans_name, configurations, num_processes, clean, verbose,
                       preprocessor_class=preprocessor_class)


def _check_configurations(configurations: Sequence[str]) -> None:
    unsupported = [c for c in configurations if c != QC_CONFIGURATION]
    if unsupported:
        raise QCDatasetError(f"nnQC plans only the {QC_CONFIGURATION} configuration, not {unsupported}")
